// Package protocol implements the framing of the pyro guest agent protocol
// (see PROTOCOL.md): a 4-byte magic, two big-endian u32 lengths, a JSON
// object header and a raw payload.
package protocol

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Version constants live here so that there is exactly one place to bump.
const (
	// AgentVersion is reported in hello_ok and by --version.
	AgentVersion = "1.4.0"
	// ProtocolVersion is the protocol revision described in PROTOCOL.md.
	ProtocolVersion = 1
)

// Frame limits from PROTOCOL.md.
const (
	PrefixLen     = 12
	MaxHeaderLen  = 64 << 10 // 65536
	MaxPayloadLen = 1 << 20  // 1048576
)

// Magic starts every frame.
var Magic = [4]byte{'P', 'Y', 'R', 'O'}

// Frame is one decoded frame. Header is the raw JSON object text.
type Frame struct {
	Header  []byte
	Payload []byte
}

// ErrFrameTooLarge is returned by Encode when a frame would violate the limits.
var ErrFrameTooLarge = errors.New("protocol: frame exceeds size limits")

// Encode marshals header as JSON and returns the complete frame bytes, so
// that a writer can emit a frame with a single Write call.
func Encode(header any, payload []byte) ([]byte, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return nil, fmt.Errorf("protocol: marshal header: %w", err)
	}
	return EncodeRaw(h, payload)
}

// EncodeRaw frames an already-marshalled header. It does not check that the
// header is a JSON object; tests use it to produce deliberately bad frames.
func EncodeRaw(header, payload []byte) ([]byte, error) {
	if len(header) < 1 || len(header) > MaxHeaderLen || len(payload) > MaxPayloadLen {
		return nil, ErrFrameTooLarge
	}
	buf := make([]byte, PrefixLen+len(header)+len(payload))
	copy(buf, Magic[:])
	binary.BigEndian.PutUint32(buf[4:], uint32(len(header)))
	binary.BigEndian.PutUint32(buf[8:], uint32(len(payload)))
	copy(buf[PrefixLen:], header)
	copy(buf[PrefixLen+len(header):], payload)
	return buf, nil
}

// Decoder reads frames from a byte stream, skipping anything that is not a
// well-formed frame. It never buffers more than one maximal header plus one
// maximal payload.
//
// Resynchronisation: when the bytes at the current position are not a valid
// frame start (bad magic, out-of-range lengths, or a header that is not a
// UTF-8 JSON object) the decoder drops one byte and scans forward to the next
// occurrence of the magic. It deliberately does not trust the lengths of a
// rejected frame to skip it wholesale, because those lengths are exactly what
// may be corrupt.
type Decoder struct {
	br *bufio.Reader
	// Skipped counts bytes discarded while resynchronising (diagnostics).
	Skipped uint64
}

// NewDecoder returns a Decoder reading from r. The internal buffer is exactly
// large enough to Peek a maximal prefix+header, which is what lets a rejected
// header be un-consumed and rescanned byte by byte.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{br: bufio.NewReaderSize(r, PrefixLen+MaxHeaderLen)}
}

// Next returns the next valid frame. Any read error (including io.EOF in the
// middle of a frame) is returned as is; the partial input is then useless and
// the caller is expected to discard the Decoder.
func (d *Decoder) Next() (Frame, error) {
	for {
		if err := d.syncToMagic(); err != nil {
			return Frame{}, err
		}
		prefix, err := d.br.Peek(PrefixLen)
		if err != nil {
			return Frame{}, err
		}
		hlen := binary.BigEndian.Uint32(prefix[4:])
		plen := binary.BigEndian.Uint32(prefix[8:])
		if hlen < 1 || hlen > MaxHeaderLen || plen > MaxPayloadLen {
			d.skip(1)
			continue
		}
		head, err := d.br.Peek(PrefixLen + int(hlen))
		if err != nil {
			return Frame{}, err
		}
		if !IsJSONObject(head[PrefixLen:]) {
			d.skip(1)
			continue
		}
		header := append([]byte(nil), head[PrefixLen:]...)
		if _, err := d.br.Discard(PrefixLen + int(hlen)); err != nil {
			return Frame{}, err
		}
		// Only now, with a plausible header, is the payload allocated: a
		// garbage length can never make us allocate before validation.
		payload := make([]byte, plen)
		if _, err := io.ReadFull(d.br, payload); err != nil {
			if err == io.ErrUnexpectedEOF {
				err = io.EOF
			}
			return Frame{}, err
		}
		return Frame{Header: header, Payload: payload}, nil
	}
}

// syncToMagic discards bytes until the buffered input starts with the magic.
func (d *Decoder) syncToMagic() error {
	for {
		b, err := d.br.Peek(len(Magic))
		if err != nil {
			return err
		}
		if bytes.Equal(b, Magic[:]) {
			return nil
		}
		// Skip to the next candidate first byte within what is already
		// buffered, so garbage is scanned in bulk rather than byte by byte.
		buf, _ := d.br.Peek(d.br.Buffered())
		i := bytes.IndexByte(buf[1:], Magic[0])
		if i < 0 {
			d.skip(len(buf))
		} else {
			d.skip(i + 1)
		}
	}
}

func (d *Decoder) skip(n int) {
	m, _ := d.br.Discard(n)
	d.Skipped += uint64(m)
}

// IsJSONObject reports whether b is valid UTF-8 holding exactly one JSON
// object (not null, an array, a string, ...).
func IsJSONObject(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return false
	}
	return m != nil // "null" unmarshals into a nil map without error
}
