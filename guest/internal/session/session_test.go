package session

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pyro/guest/internal/protocol"
	"pyro/guest/internal/reaper"
)

// These tests never use os/exec: its Wait would race with the reaper.

type msg struct {
	h       map[string]any
	payload []byte
}

func (m msg) typ() string { s, _ := m.h["type"].(string); return s }
func (m msg) id() int64   { return m.num("id") }
func (m msg) str(k string) string {
	s, _ := m.h[k].(string)
	return s
}
func (m msg) num(k string) int64 {
	n, ok := m.h[k].(json.Number)
	if !ok {
		return -1
	}
	v, _ := n.Int64()
	return v
}
func (m msg) String() string { return fmt.Sprintf("%v +%dB", m.h, len(m.payload)) }

type client struct {
	t      *testing.T
	conn   net.Conn
	frames chan msg
}

func decodeMsg(t *testing.T, f protocol.Frame) msg {
	d := json.NewDecoder(bytes.NewReader(f.Header))
	d.UseNumber()
	var h map[string]any
	if err := d.Decode(&h); err != nil {
		t.Errorf("agent sent bad header %q: %v", f.Header, err)
	}
	return msg{h: h, payload: f.Payload}
}

// newClient connects a Conn to one end of a socketpair and returns the
// host side. The Conn is torn down at test end.
func newClient(t *testing.T, opts Options) *client {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "sock")
		if conns[i], err = net.FileConn(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	agentSide, hostSide := conns[0], conns[1]
	if opts.Reaper == nil {
		opts.Reaper = reaper.Start()
	}
	if opts.BootID == nil {
		opts.BootID = func() string { return "test-boot" }
	}
	sc := NewConn(agentSide, opts)
	go func() {
		_ = sc.Serve(agentSide)
		agentSide.Close()
		sc.Close()
	}()
	c := &client{t: t, conn: hostSide, frames: make(chan msg, 4096)}
	go func() {
		defer close(c.frames)
		d := protocol.NewDecoder(hostSide)
		for {
			f, err := d.Next()
			if err != nil {
				return
			}
			c.frames <- decodeMsg(t, f)
		}
	}()
	t.Cleanup(func() { hostSide.Close() })
	return c
}

func (c *client) send(h map[string]any, payload []byte) {
	c.t.Helper()
	b, err := protocol.Encode(h, payload)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) next() msg {
	c.t.Helper()
	select {
	case m, ok := <-c.frames:
		if !ok {
			c.t.Fatal("connection closed")
		}
		return m
	case <-time.After(5 * time.Second):
		c.t.Fatal("timed out waiting for a frame")
	}
	panic("unreachable")
}

// expect returns the next frame and checks its type and id.
func (c *client) expect(typ string, id int64) msg {
	c.t.Helper()
	m := c.next()
	if m.typ() != typ || m.id() != id {
		c.t.Fatalf("want %s id %d, got %v", typ, id, m)
	}
	return m
}

func (c *client) hello(id int64, nonce string) msg {
	c.t.Helper()
	c.send(map[string]any{"type": "hello", "id": id, "nonce": nonce}, nil)
	m := c.expect("hello_ok", id)
	if m.str("nonce") != nonce {
		c.t.Fatalf("hello_ok nonce %q, want %q", m.str("nonce"), nonce)
	}
	return m
}

type execResult struct {
	started msg
	stdout  string
	stderr  string
	exit    msg
}

// collect gathers the replies of several execs until each has exited,
// checking that started comes first and exit last for every id.
func (c *client) collect(ids ...int64) map[int64]*execResult {
	c.t.Helper()
	res := map[int64]*execResult{}
	for _, id := range ids {
		res[id] = &execResult{}
	}
	for remaining := len(ids); remaining > 0; {
		m := c.next()
		r := res[m.id()]
		if r == nil {
			c.t.Fatalf("unexpected frame %v", m)
		}
		if r.exit.h != nil {
			c.t.Fatalf("frame after exit: %v", m)
		}
		if m.typ() != "started" && r.started.h == nil {
			c.t.Fatalf("frame before started: %v", m)
		}
		switch m.typ() {
		case "started":
			r.started = m
		case "output":
			if len(m.payload) > 65536 {
				c.t.Fatalf("output frame of %d bytes", len(m.payload))
			}
			if m.str("stream") == "stdout" {
				r.stdout += string(m.payload)
			} else {
				r.stderr += string(m.payload)
			}
		case "exit":
			r.exit = m
			remaining--
		default:
			c.t.Fatalf("unexpected frame %v", m)
		}
	}
	return res
}

func execReq(id int64, shell string, timeoutMs int64) map[string]any {
	return map[string]any{"type": "exec", "id": id, "shell": shell, "timeout_ms": timeoutMs, "max_output_bytes": 1 << 20,
		"env": map[string]string{"HOME": os.TempDir()}} // keep ~/.profile out of it
}

func TestHello(t *testing.T) {
	c := newClient(t, Options{})
	c.send(map[string]any{"type": "hello", "id": 1, "nonce": "abc", "time_unix_ms": 1700000000000,
		"hostname": "vm-1", "machine_id": strings.Repeat("AB", 16)}, bytes.Repeat([]byte{7}, 4096))
	m := c.expect("hello_ok", 1)
	if m.str("nonce") != "abc" || m.str("agent_version") != protocol.AgentVersion || m.num("protocol") != 1 ||
		m.str("boot_id") != "test-boot" || m.h["pid1"] != false {
		t.Fatalf("hello_ok %v", m)
	}
}

func TestHelloValidation(t *testing.T) {
	c := newClient(t, Options{})
	cases := []struct {
		h       map[string]any
		payload []byte
	}{
		{map[string]any{"type": "hello", "id": 1}, nil},
		{map[string]any{"type": "hello", "id": 2, "nonce": ""}, nil},
		{map[string]any{"type": "hello", "id": 3, "nonce": "n", "machine_id": "xyz"}, nil},
		{map[string]any{"type": "hello", "id": 4, "nonce": "n", "hostname": "bad host"}, nil},
		{map[string]any{"type": "hello", "id": 5, "nonce": "n", "time_unix_ms": -5}, nil},
		{map[string]any{"type": "hello", "id": 6, "nonce": "n"}, make([]byte, protocol.MaxEntropyLen+1)},
		{map[string]any{"type": "hello", "id": 7, "nonce": 12}, nil},
	}
	for _, tc := range cases {
		c.send(tc.h, tc.payload)
		id := int64(tc.h["id"].(int))
		m := c.expect("error", id)
		if m.str("code") != "bad_request" {
			t.Errorf("hello %d: %v", id, m)
		}
		// Once the nonce is known, the error carries it.
		if n, ok := tc.h["nonce"].(string); ok && n != "" && m.str("nonce") != n {
			t.Errorf("hello %d: error lacks nonce: %v", id, m)
		}
	}
	c.hello(8, "finally")
}

func TestRequestsBeforeHelloAreRefused(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	c := newClient(t, Options{})
	c.send(execReq(1, "touch "+marker, 5000), nil)
	if m := c.expect("error", 1); m.str("code") != "bad_request" {
		t.Fatalf("got %v", m)
	}
	c.send(map[string]any{"type": "ping", "id": 2}, nil)
	c.expect("error", 2)
	c.hello(3, "n")
	c.send(map[string]any{"type": "ping", "id": 4}, nil)
	c.expect("ok", 4)
	time.Sleep(100 * time.Millisecond)
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("exec sent before hello was executed")
	}
}

func TestMalformedAndUnknown(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	c.send(map[string]any{"type": "frobnicate", "id": 9}, nil)
	if m := c.expect("error", 9); m.str("code") != "bad_request" {
		t.Fatal(m)
	}
	c.send(map[string]any{"foo": "bar"}, nil)
	if m := c.expect("error", 0); m.str("code") != "bad_request" {
		t.Fatal(m)
	}
	c.send(map[string]any{"type": "ping", "id": -3}, nil)
	c.expect("error", 0)
	// Garbage between frames is skipped; the session carries on.
	if _, err := c.conn.Write([]byte("PYRO\xff\xff\xff\xff junk")); err != nil {
		t.Fatal(err)
	}
	c.send(map[string]any{"type": "ping", "id": 10}, nil)
	c.expect("ok", 10)
}

func TestExecArgvAndShell(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	c.send(map[string]any{"type": "exec", "id": 2, "argv": []string{"echo", "hi there"}, "timeout_ms": 5000, "max_output_bytes": 100}, nil)
	c.send(execReq(3, "echo out; echo err >&2; exit 7", 5000), nil)
	res := c.collect(2, 3)

	r := res[2]
	if r.started.num("pid") <= 0 || r.stdout != "hi there\n" || r.exit.num("exit_code") != 0 {
		t.Fatalf("argv exec: %+v", r)
	}
	e := res[3].exit
	if res[3].stdout != "out\n" || res[3].stderr != "err\n" || e.num("exit_code") != 7 || e.h["signal"] != nil ||
		e.h["timed_out"] != false || e.num("stdout_bytes") != 4 || e.num("stderr_bytes") != 4 ||
		e.h["stdout_truncated"] != false || e.num("duration_ms") < 0 {
		t.Fatalf("shell exec: %+v", res[3])
	}
}

func TestExecTimeoutAndTruncation(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	c.send(execReq(2, "sleep 60 & sleep 60", 300), nil)
	big := execReq(3, "yes | head -c 5000000", 5000)
	big["max_output_bytes"] = 10
	c.send(big, nil)
	start := time.Now()
	res := c.collect(2, 3)
	if time.Since(start) > 3*time.Second {
		t.Fatal("too slow")
	}
	if e := res[2].exit; e.num("exit_code") != 124 || e.h["timed_out"] != true || e.str("signal") != "SIGKILL" {
		t.Fatalf("timeout exit %v", e)
	}
	if e := res[3].exit; e.num("stdout_bytes") != 5000000 || e.h["stdout_truncated"] != true || res[3].stdout != "y\ny\ny\ny\ny\n" {
		t.Fatalf("truncated exit %v stdout %q", e, res[3].stdout)
	}
}

func TestExecErrors(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	bad := []map[string]any{
		{"type": "exec", "id": 2, "timeout_ms": 1000, "max_output_bytes": 0},
		{"type": "exec", "id": 3, "argv": []string{"true"}, "shell": "true", "timeout_ms": 1000, "max_output_bytes": 0},
		{"type": "exec", "id": 4, "argv": []string{}, "timeout_ms": 1000, "max_output_bytes": 0},
		{"type": "exec", "id": 5, "shell": "", "timeout_ms": 1000, "max_output_bytes": 0},
		{"type": "exec", "id": 6, "shell": "true", "timeout_ms": 0, "max_output_bytes": 0},
		{"type": "exec", "id": 7, "shell": "true", "timeout_ms": 1000},
		{"type": "exec", "id": 8, "shell": "true", "timeout_ms": 1.5, "max_output_bytes": 0},
		{"type": "exec", "id": 9, "shell": "true", "timeout_ms": 1000, "max_output_bytes": 0, "env": map[string]string{"A=B": "c"}},
		{"type": "exec", "id": 10, "argv": "true", "timeout_ms": 1000, "max_output_bytes": 0},
	}
	for _, req := range bad {
		c.send(req, nil)
		id := int64(req["id"].(int))
		if m := c.expect("error", id); m.str("code") != "bad_request" {
			t.Errorf("%v: got %v", req, m)
		}
	}
	failing := []map[string]any{
		{"type": "exec", "id": 20, "argv": []string{"no-such-command-7f3a"}, "timeout_ms": 1000, "max_output_bytes": 0},
		{"type": "exec", "id": 21, "argv": []string{"true"}, "cwd": "/no/such/dir", "timeout_ms": 1000, "max_output_bytes": 0},
	}
	for _, req := range failing {
		c.send(req, nil)
		id := int64(req["id"].(int))
		m := c.expect("error", id)
		if m.str("code") != "exec_failed" || m.str("message") == "" {
			t.Errorf("%v: got %v", req, m)
		}
	}
	// The only reply to a failed exec is the error: a ping comes next.
	c.send(map[string]any{"type": "ping", "id": 22}, nil)
	c.expect("ok", 22)
}

func TestEnvAndCwd(t *testing.T) {
	dir := t.TempDir()
	c := newClient(t, Options{})
	c.hello(1, "n")
	c.send(map[string]any{"type": "exec", "id": 2, "argv": []string{"sh", "-c", `echo "$GREETING $TERM"; pwd`},
		"cwd": dir, "env": map[string]string{"GREETING": "hello"}, "timeout_ms": 5000, "max_output_bytes": 1000}, nil)
	r := c.collect(2)[2]
	if want := "hello dumb\n" + dir + "\n"; r.stdout != want {
		t.Fatalf("got %q, want %q", r.stdout, want)
	}
}

func TestKill(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	c.send(execReq(2, "sleep 60", 10000), nil)
	c.expect("started", 2)
	c.send(map[string]any{"type": "kill", "id": 3, "target": 2, "signal": "SIGTERM"}, nil)
	c.expect("ok", 3)
	m := c.expect("exit", 2)
	if m.num("exit_code") != 143 || m.str("signal") != "SIGTERM" || m.h["timed_out"] != false {
		t.Fatalf("exit %v", m)
	}
	c.send(map[string]any{"type": "kill", "id": 4, "target": 2}, nil)
	if m := c.expect("error", 4); m.str("code") != "not_found" {
		t.Fatal(m)
	}
	c.send(map[string]any{"type": "kill", "id": 5, "target": 2, "signal": "SIGSTOP"}, nil)
	if m := c.expect("error", 5); m.str("code") != "bad_request" {
		t.Fatal(m)
	}
	// Default signal is SIGKILL, and a kill right behind the exec (without
	// waiting for started) still finds it.
	c.send(execReq(6, "sleep 60", 10000), nil)
	c.send(map[string]any{"type": "kill", "id": 7, "target": 6}, nil)
	var exit msg
	for exit.h == nil {
		switch m := c.next(); {
		case m.typ() == "exit" && m.id() == 6:
			exit = m
		case m.typ() == "ok" && m.id() == 7, m.typ() == "started" && m.id() == 6:
		default:
			t.Fatalf("unexpected %v", m)
		}
	}
	if exit.num("exit_code") != 137 || exit.str("signal") != "SIGKILL" {
		t.Fatalf("exit %v", exit)
	}
}

func TestConcurrentExecs(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	ids := []int64{10, 11, 12, 13, 14}
	start := time.Now()
	for _, id := range ids {
		c.send(execReq(id, fmt.Sprintf("sleep 0.5; echo %d", id), 5000), nil)
	}
	// A duplicate id of a running exec is refused.
	c.send(execReq(10, "true", 5000), nil)
	res := map[int64]*execResult{}
	for _, id := range ids {
		res[id] = &execResult{}
	}
	sawDup := false
	for done := 0; done < len(ids); {
		m := c.next()
		if m.typ() == "error" && m.id() == 10 {
			sawDup = true
			continue
		}
		r := res[m.id()]
		switch m.typ() {
		case "output":
			r.stdout += string(m.payload)
		case "exit":
			r.exit = m
			done++
		}
	}
	if !sawDup {
		t.Error("duplicate exec id was not refused")
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("execs did not run concurrently: %v", el)
	}
	for _, id := range ids {
		if res[id].stdout != fmt.Sprintf("%d\n", id) || res[id].exit.num("exit_code") != 0 {
			t.Errorf("exec %d: %+v", id, res[id])
		}
	}
}

// A new hello must cut off everything of the previous session: after its
// hello_ok no frame of the old session's exec may appear, although the
// command keeps running and printing.
func TestNewHelloCutsOffOldSession(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "first")
	c.send(execReq(2, "while :; do echo tick; sleep 0.005; done", 1500), nil)
	c.expect("started", 2)
	if m := c.expect("output", 2); !strings.HasPrefix(string(m.payload), "tick") {
		t.Fatal(m)
	}
	c.send(map[string]any{"type": "hello", "id": 3, "nonce": "second"}, nil)
	// Frames of the old session may still precede hello_ok ...
	for {
		m := c.next()
		if m.typ() == "hello_ok" {
			if m.str("nonce") != "second" || m.id() != 3 {
				t.Fatalf("bad hello_ok %v", m)
			}
			break
		}
		if m.id() != 2 {
			t.Fatalf("unexpected %v", m)
		}
	}
	// ... but none may follow it.
	deadline := time.After(400 * time.Millisecond)
	for {
		select {
		case m := <-c.frames:
			t.Fatalf("frame after new hello_ok: %v", m)
		case <-deadline:
			c.send(map[string]any{"type": "ping", "id": 4}, nil)
			c.expect("ok", 4)
			// The old exec is not addressable from the new session.
			c.send(map[string]any{"type": "kill", "id": 5, "target": 2}, nil)
			c.expect("error", 5)
			return
		}
	}
}

func TestPoweroff(t *testing.T) {
	called := make(chan struct{})
	c := newClient(t, Options{PowerOff: func() { close(called) }})
	c.hello(1, "n")
	c.send(map[string]any{"type": "poweroff", "id": 2}, nil)
	c.expect("ok", 2)
	select {
	case <-called:
	case <-time.After(3 * time.Second):
		t.Fatal("PowerOff not called")
	}
}

// blockingWriter stands in for a virtio port with no host attached: every
// write blocks until released.
type blockingWriter struct {
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// gateReader blocks for d and then reports EOF, like a port whose host
// disconnects after a while.
type gateReader time.Duration

func (g gateReader) Read([]byte) (int, error) {
	time.Sleep(time.Duration(g))
	return 0, io.EOF
}

func frames(t *testing.T, reqs ...map[string]any) []byte {
	var b []byte
	for _, r := range reqs {
		f, err := protocol.Encode(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, f...)
	}
	return b
}

// When a host disconnects (EOF) while the writer is stuck, the session ends:
// commands of that session must no longer be blocked by the full queue, and
// a request arriving before the next hello is not executed.
func TestEOFEndsSession(t *testing.T) {
	dir := t.TempDir()
	w := &blockingWriter{release: make(chan struct{})}
	conn := NewConn(w, Options{Reaper: reaper.Start(), BootID: func() string { return "" }})
	defer conn.Close()

	// Plenty of output: far more than the bounded queue holds.
	first := frames(t,
		map[string]any{"type": "hello", "id": 1, "nonce": "a"},
		execReq(2, "head -c 3000000 /dev/zero; touch "+filepath.Join(dir, "done"), 5000))
	// A partial frame at the end must be dropped, not glued to later input.
	first = append(first, frames(t, map[string]any{"type": "ping", "id": 3})[:10]...)
	// The host stays "connected" long enough for the command to fill the
	// queue behind the stuck writer, then disconnects.
	gate := gateReader(200 * time.Millisecond)
	if err := conn.Serve(io.MultiReader(bytes.NewReader(first), gate)); err != io.EOF {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		t.Fatal("test broken: command finished although its output was stuck")
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("command of an ended session is blocked on its output")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Reconnect. A new host makes the stuck write complete; the writer
	// then drains the stale queue. A stale exec before hello is refused,
	// then a proper hello starts the next session.
	close(w.release)
	second := frames(t,
		execReq(4, "touch "+filepath.Join(dir, "stale"), 5000),
		map[string]any{"type": "hello", "id": 5, "nonce": "b"},
		map[string]any{"type": "ping", "id": 6})
	if err := conn.Serve(io.MultiReader(bytes.NewReader(second), gateReader(200*time.Millisecond))); err != io.EOF {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "stale")); err == nil {
		t.Fatal("exec before hello was executed")
	}

	// What reached the "port": possibly one frame that was already being
	// written when the host left (first session's hello_ok), then only
	// frames of sessions that were current when written.
	w.mu.Lock()
	d := protocol.NewDecoder(bytes.NewReader(w.buf.Bytes()))
	w.mu.Unlock()
	var got []string
	for {
		f, err := d.Next()
		if err != nil {
			break
		}
		m := decodeMsg(t, f)
		if m.id() == 2 {
			t.Fatalf("output of the ended session was written: %v", m)
		}
		got = append(got, fmt.Sprintf("%s/%d", m.typ(), m.id()))
	}
	// The refusal of the stale exec belongs to the sessionless interval
	// before the second hello, so it is only written if the writer got to
	// it before that hello.
	all := strings.Join(got, " ")
	if all != "hello_ok/1 hello_ok/5 ok/6" && all != "hello_ok/1 error/4 hello_ok/5 ok/6" {
		t.Fatalf("written frames %q", all)
	}
}
