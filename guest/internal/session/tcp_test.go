package session

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// echoServer echoes every connection until its EOF, then closes it. The
// returned channel gets each connection's error once it ended.
func echoServer(t *testing.T) (int, chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ended := make(chan error, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_, err := io.Copy(conn, conn)
				ended <- err
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, ended
}

func TestTCPForwarding(t *testing.T) {
	port, ended := echoServer(t)
	c := newClient(t, Options{})
	c.hello(1, "n")

	c.send(map[string]any{"type": "tcp_open", "id": 10, "port": port}, nil)
	c.expect("tcp_opened", 10)
	c.send(map[string]any{"type": "tcp_send", "id": 11, "target": 10}, []byte("hello "))
	c.send(map[string]any{"type": "tcp_send", "id": 12, "target": 10}, []byte("world"))
	var got []byte
	for len(got) < 11 {
		m := c.expect("tcp_data", 10)
		got = append(got, m.payload...)
	}
	if string(got) != "hello world" {
		t.Fatalf("echoed %q", got)
	}
	// Half-close towards the guest: the echo server sees EOF and closes,
	// so the guest side sends EOF too and the connection is gone.
	c.send(map[string]any{"type": "tcp_shutdown", "id": 13, "target": 10}, nil)
	c.expect("tcp_eof", 10)
	m := c.expect("tcp_closed", 10)
	if _, has := m.h["error"]; has {
		t.Fatalf("closed with %v", m)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("server side did not end")
	}

	// Lots of data both ways, in frames of the largest size: back-pressure
	// must neither lose nor reorder anything.
	c.send(map[string]any{"type": "tcp_open", "id": 20, "port": port}, nil)
	c.expect("tcp_opened", 20)
	want := make([]byte, 3<<20)
	for i := range want {
		want[i] = byte(i * 7 / 3)
	}
	go func() {
		for off, n := 0, 0; off < len(want); off += 1 << 20 {
			n++
			c.send(map[string]any{"type": "tcp_send", "id": 20 + n, "target": 20}, want[off:off+1<<20])
		}
		c.send(map[string]any{"type": "tcp_shutdown", "id": 30, "target": 20}, nil)
	}()
	got = got[:0]
	for {
		m := c.next()
		if m.id() != 20 {
			t.Fatalf("unexpected %v", m)
		}
		if m.typ() == "tcp_eof" {
			break
		}
		if m.typ() != "tcp_data" || len(m.payload) > 65536 {
			t.Fatalf("unexpected %v", m)
		}
		got = append(got, m.payload...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(want))
	}
	c.expect("tcp_closed", 20)
	<-ended

	// tcp_close closes at once; tcp_closed still follows.
	c.send(map[string]any{"type": "tcp_open", "id": 40, "port": port}, nil)
	c.expect("tcp_opened", 40)
	c.send(map[string]any{"type": "tcp_close", "id": 41, "target": 40}, nil)
	if m := c.expect("tcp_closed", 40); m.h["error"] != nil {
		t.Fatal(m)
	}
	select {
	case <-ended:
	case <-time.After(3 * time.Second):
		t.Fatal("server side did not see the close")
	}
	// Data for a closed connection is dropped without a reply.
	c.send(map[string]any{"type": "tcp_send", "id": 42, "target": 40}, []byte("late"))
	c.send(map[string]any{"type": "ping", "id": 43}, nil)
	c.expect("ok", 43)

	// A port nothing listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	c.send(map[string]any{"type": "tcp_open", "id": 50, "port": closed}, nil)
	if m := c.expect("error", 50); m.str("code") != "connect_failed" || m.str("message") == "" {
		t.Fatal(m)
	}
	// Invalid requests.
	for i, req := range []map[string]any{
		{"type": "tcp_open", "id": 60},
		{"type": "tcp_open", "id": 61, "port": 70000},
		{"type": "tcp_send", "id": 62},
		{"type": "tcp_close", "id": 63, "target": -1},
	} {
		c.send(req, nil)
		if m := c.expect("error", int64(60+i)); m.str("code") != "bad_request" {
			t.Errorf("%v: %v", req, m)
		}
	}
	// An id that is still open cannot be opened again.
	c.send(map[string]any{"type": "tcp_open", "id": 70, "port": port}, nil)
	c.expect("tcp_opened", 70)
	c.send(map[string]any{"type": "tcp_open", "id": 70, "port": port}, nil)
	if m := c.expect("error", 70); m.str("code") != "bad_request" {
		t.Fatal(m)
	}

	c.send(map[string]any{"type": "tcp_send", "id": 71, "target": 70}, []byte("x"))
	c.expect("tcp_data", 70)

	// When the session ends, its connections are closed.
	c.hello(80, "next")
	select {
	case err := <-ended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("connection outlived its session")
	}
	// Nothing more about it arrives in the new session.
	c.send(map[string]any{"type": "ping", "id": 81}, nil)
	c.expect("ok", 81)
}

// A guest side that sends and closes by itself.
func TestTCPGuestCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		conn.Write([]byte("banner\n"))
		conn.Close()
	}()
	c := newClient(t, Options{})
	c.hello(1, "n")
	c.send(map[string]any{"type": "tcp_open", "id": 2, "port": ln.Addr().(*net.TCPAddr).Port}, nil)
	c.expect("tcp_opened", 2)
	if m := c.expect("tcp_data", 2); string(m.payload) != "banner\n" {
		t.Fatal(m)
	}
	c.expect("tcp_eof", 2)
	// Nothing more until the host closes its side.
	c.send(map[string]any{"type": "ping", "id": 3}, nil)
	c.expect("ok", 3)
	c.send(map[string]any{"type": "tcp_shutdown", "id": 4, "target": 2}, nil)
	m := c.expect("tcp_closed", 2)
	// Shutting down a socket whose peer has gone may or may not fail; it
	// is closed either way.
	t.Logf("closed: %v", m)
}
