package tcpfwd

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"pyro/guest/internal/protocol"
)

type frame struct {
	typ     string
	id      uint64
	errText string
	payload []byte
}

// fakeSession records the frames a table sends.
func fakeSession(t *testing.T) (*Table, chan frame, chan struct{}) {
	frames := make(chan frame, 1024)
	done := make(chan struct{})
	send := func(header any, payload []byte) bool {
		b, _ := json.Marshal(header)
		var h struct {
			Type    string `json:"type"`
			ID      uint64 `json:"id"`
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		json.Unmarshal(b, &h)
		if h.Error == "" {
			h.Error = h.Message
		}
		select {
		case <-done:
			return false
		case frames <- frame{h.Type, h.ID, h.Error, payload}:
			return true
		}
	}
	return NewTable(send, done), frames, done
}

func next(t *testing.T, frames chan frame) frame {
	t.Helper()
	select {
	case f := <-frames:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no frame")
	}
	panic("unreachable")
}

func TestOpenValidation(t *testing.T) {
	tb, _, _ := fakeSession(t)
	for _, port := range []int{0, -1, 65536} {
		if err := tb.Open(1, port); !errors.Is(err, ErrBadRequest) {
			t.Errorf("port %d: %v", port, err)
		}
	}
}

func TestTooManyAndCloseAll(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, MaxConns+1)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	tb, frames, done := fakeSession(t)
	for i := 0; i < MaxConns; i++ {
		if err := tb.Open(uint64(i+1), port); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < MaxConns; i++ {
		if f := next(t, frames); f.typ != protocol.TypeTCPOpened {
			t.Fatalf("%+v", f)
		}
	}
	if err := tb.Open(1, port); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("duplicate id: %v", err)
	}
	if err := tb.Open(MaxConns+1, port); err != nil {
		t.Fatal(err)
	}
	if f := next(t, frames); f.typ != protocol.TypeError || f.id != MaxConns+1 || f.errText == "" {
		t.Fatalf("%+v", f)
	}
	// The session ends: every connection is closed.
	close(done)
	tb.CloseAll()
	for i := 0; i < MaxConns; i++ {
		c := <-accepted
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("connection %d: %v", i, err)
		}
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		tb.mu.Lock()
		n := len(tb.conns)
		tb.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections left in the table", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
