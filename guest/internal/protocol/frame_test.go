package protocol

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func mustEncode(t *testing.T, header any, payload []byte) []byte {
	t.Helper()
	b, err := Encode(header, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawFrame builds a frame with arbitrary (possibly invalid) lengths.
func rawFrame(hlen, plen uint32, rest []byte) []byte {
	b := append([]byte{}, Magic[:]...)
	b = binary.BigEndian.AppendUint32(b, hlen)
	b = binary.BigEndian.AppendUint32(b, plen)
	return append(b, rest...)
}

func idOf(t *testing.T, f Frame) uint64 {
	t.Helper()
	_, id, err := ParseEnvelope(f.Header)
	if err != nil {
		t.Fatalf("envelope %s: %v", f.Header, err)
	}
	return id
}

func TestRoundTrip(t *testing.T) {
	payloads := [][]byte{nil, []byte("hello"), bytes.Repeat([]byte{0, 'P', 'Y', 'R', 'O'}, 1000), make([]byte, MaxPayloadLen)}
	var stream bytes.Buffer
	for i, p := range payloads {
		stream.Write(mustEncode(t, OK{Type: TypeOK, ID: uint64(i)}, p))
	}
	// OneByteReader exercises every partial-read path of the decoder.
	for _, r := range []io.Reader{bytes.NewReader(stream.Bytes()), iotest.OneByteReader(bytes.NewReader(stream.Bytes()))} {
		d := NewDecoder(r)
		for i, p := range payloads {
			f, err := d.Next()
			if err != nil {
				t.Fatalf("frame %d: %v", i, err)
			}
			var h OK
			if err := json.Unmarshal(f.Header, &h); err != nil || h.ID != uint64(i) || h.Type != TypeOK {
				t.Fatalf("frame %d: header %s (%v)", i, f.Header, err)
			}
			if !bytes.Equal(f.Payload, p) {
				t.Fatalf("frame %d: payload mismatch (%d vs %d bytes)", i, len(f.Payload), len(p))
			}
		}
		if _, err := d.Next(); err != io.EOF {
			t.Fatalf("want EOF after last frame, got %v", err)
		}
		if d.Skipped != 0 {
			t.Fatalf("clean stream skipped %d bytes", d.Skipped)
		}
	}
}

func TestEncodeLimits(t *testing.T) {
	if _, err := Encode(OK{}, make([]byte, MaxPayloadLen+1)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized payload: %v", err)
	}
	big := map[string]string{"x": strings.Repeat("a", MaxHeaderLen)}
	if _, err := Encode(big, nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized header: %v", err)
	}
	if _, err := EncodeRaw(make([]byte, MaxHeaderLen), nil); err != nil {
		t.Fatalf("max header rejected: %v", err)
	}
}

func TestResync(t *testing.T) {
	var s bytes.Buffer
	s.WriteString("garbage PY PYR PYRX")                            // partial magics
	s.Write(mustEncode(t, OK{Type: TypeOK, ID: 1}, []byte("one")))  // valid
	s.Write(rawFrame(MaxHeaderLen+1, 0, []byte(`{"id":99}`)))       // header too long
	s.Write(rawFrame(2, MaxPayloadLen+1, []byte(`{}`)))             // payload too long
	s.Write(rawFrame(0, 0, nil))                                    // empty header
	s.Write(rawFrame(5, 0, []byte(`[1,2]`)))                        // not an object
	s.Write(rawFrame(4, 0, []byte(`null`)))                         // not an object
	s.Write(rawFrame(9, 0, []byte(`{"id":1,`)))                     // truncated JSON (+1 byte of next)
	s.Write(rawFrame(3, 0, []byte{'{', 0xff, '}'}))                 // invalid UTF-8
	s.Write(mustEncode(t, OK{Type: TypeOK, ID: 2}, []byte("PYRO"))) // valid, magic in payload
	// A huge declared payload that is really followed by a valid frame:
	// the bad lengths must not swallow it.
	s.Write(rawFrame(2, MaxPayloadLen*4, nil))
	s.Write(mustEncode(t, OK{Type: TypeOK, ID: 3}, nil))

	d := NewDecoder(iotest.HalfReader(bytes.NewReader(s.Bytes())))
	for want := uint64(1); want <= 3; want++ {
		f, err := d.Next()
		if err != nil {
			t.Fatalf("want frame %d: %v", want, err)
		}
		if got := idOf(t, f); got != want {
			t.Fatalf("got frame id %d, want %d", got, want)
		}
	}
	if _, err := d.Next(); err != io.EOF {
		t.Fatalf("want EOF, got %v", err)
	}
	if d.Skipped == 0 {
		t.Fatal("expected skipped bytes to be counted")
	}
}

func TestLargeGarbageBeforeFrame(t *testing.T) {
	garbage := bytes.Repeat([]byte("PYR\x00P"), 500_000) // 2.5 MB of near-misses
	var s bytes.Buffer
	s.Write(garbage)
	s.Write(mustEncode(t, OK{Type: TypeOK, ID: 7}, nil))
	d := NewDecoder(&s)
	f, err := d.Next()
	if err != nil {
		t.Fatal(err)
	}
	if idOf(t, f) != 7 {
		t.Fatal("wrong frame")
	}
	if d.Skipped != uint64(len(garbage)) {
		t.Fatalf("skipped %d, want %d", d.Skipped, len(garbage))
	}
}

func TestTruncatedFrameIsEOF(t *testing.T) {
	b := mustEncode(t, OK{Type: TypeOK, ID: 1}, []byte("payload"))
	for cut := 1; cut < len(b); cut++ {
		d := NewDecoder(bytes.NewReader(b[:cut]))
		if _, err := d.Next(); err != io.EOF {
			t.Fatalf("cut at %d: want io.EOF, got %v", cut, err)
		}
	}
}

func TestParseEnvelope(t *testing.T) {
	cases := []struct {
		hdr     string
		typ     string
		id      uint64
		wantErr bool
	}{
		{`{"type":"ping","id":5}`, "ping", 5, false},
		{`{"type":"ping","id":9007199254740993}`, "ping", 9007199254740993, false},
		{`{"type":"ping"}`, "", 0, true},
		{`{"type":"ping","id":-1}`, "", 0, true},
		{`{"type":"ping","id":1.5}`, "", 0, true},
		{`{"type":"ping","id":"1"}`, "", 0, true},
		{`{"id":4}`, "", 4, true},
		{`{"type":7,"id":4}`, "", 4, true},
	}
	for _, c := range cases {
		typ, id, err := ParseEnvelope([]byte(c.hdr))
		if (err != nil) != c.wantErr || typ != c.typ || id != c.id {
			t.Errorf("%s: got (%q, %d, %v)", c.hdr, typ, id, err)
		}
	}
}
