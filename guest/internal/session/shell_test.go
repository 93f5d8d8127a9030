package session

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// seq hands out request ids.
type seq struct{ n int64 }

func (s *seq) next() int64 { s.n++; return s.n }

// shellEnv keeps the tester's ~/.profile and ~/.bashrc out of bash -l, and
// the shell's history out of the tester's home.
func shellEnv(t *testing.T) map[string]string { return map[string]string{"HOME": t.TempDir()} }

func (c *client) openShell(ids *seq, extra map[string]any) (string, int64) {
	c.t.Helper()
	id := ids.next()
	req := map[string]any{"type": "shell_open", "id": id, "cols": 80, "rows": 24, "env": shellEnv(c.t)}
	for k, v := range extra {
		req[k] = v
	}
	c.send(req, nil)
	m := c.expect("ok", id)
	shellID := m.str("shell_id")
	if !regexp.MustCompile(`^sh-[0-9a-f]{12}$`).MatchString(shellID) || m.num("pid") <= 0 {
		c.t.Fatalf("shell_open reply %v", m)
	}
	c.t.Cleanup(func() {
		// Best effort: the shell may already be closed.
		cid := ids.next()
		c.send(map[string]any{"type": "shell_close", "id": cid, "shell_id": shellID}, nil)
		for {
			select {
			case m, ok := <-c.frames:
				if !ok || m.id() == cid {
					return
				}
			case <-time.After(3 * time.Second):
				return
			}
		}
	})
	return shellID, m.num("pid")
}

func (c *client) shellRead(ids *seq, shellID string, cursor int64, extra map[string]any) msg {
	c.t.Helper()
	id := ids.next()
	req := map[string]any{"type": "shell_read", "id": id, "shell_id": shellID, "cursor": cursor, "max_bytes": 1 << 20}
	for k, v := range extra {
		req[k] = v
	}
	c.send(req, nil)
	m := c.expect("ok", id)
	if int64(len(m.payload)) != m.num("next_cursor")-m.num("start") {
		c.t.Fatalf("payload of %d bytes for %v", len(m.payload), m)
	}
	return m
}

func (c *client) shellWrite(ids *seq, shellID, text string) {
	c.t.Helper()
	id := ids.next()
	c.send(map[string]any{"type": "shell_write", "id": id, "shell_id": shellID}, []byte(text))
	c.expect("ok", id)
}

// readUntil reads the shell's output from *cursor on until it contains
// want, and returns what it read.
func (c *client) readUntil(ids *seq, shellID string, cursor *int64, want string) string {
	c.t.Helper()
	var out strings.Builder
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			c.t.Fatalf("shell output never had %q; got %q", want, out.String())
		}
		m := c.shellRead(ids, shellID, *cursor, map[string]any{"wait_ms": 1000})
		out.Write(m.payload)
		*cursor = m.num("next_cursor")
		if m.str("state") != "running" {
			c.t.Fatalf("shell ended: %v; output %q", m, out.String())
		}
	}
	return out.String()
}

// run types line into the shell and reads until its output contains want
// and the shell shows its prompt again (so that what is typed next is
// read by the shell, not echoed ahead by the terminal).
func (c *client) run(ids *seq, shellID string, cursor *int64, line, want string) string {
	c.t.Helper()
	c.shellWrite(ids, shellID, line+"\n")
	out := c.readUntil(ids, shellID, cursor, want)
	for !strings.HasSuffix(out, "# ") {
		out += c.readUntil(ids, shellID, cursor, "# ")
	}
	return out
}

func TestShellBasics(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	ids := &seq{n: 100}
	sh, pid := c.openShell(ids, nil)
	var cur int64
	// The shell is up and prints a prompt.
	c.readUntil(ids, sh, &cur, "# ")

	out := c.run(ids, sh, &cur, "tty; echo TERM=$TERM-$((6*7))", "-42")
	if !regexp.MustCompile(`/dev/pts/\d+\r\n`).MatchString(out) || !strings.Contains(out, "TERM=xterm-256color-42") {
		t.Fatalf("tty output %q", out)
	}

	// State persists between commands.
	c.run(ids, sh, &cur, "cd /tmp; export X=1", "# ")
	out = c.run(ids, sh, &cur, "pwd; echo x-$X-y", "x-1-y")
	if !strings.Contains(out, "/tmp\r\n") {
		t.Fatalf("pwd output %q", out)
	}

	// shell_list shows it, with its current directory.
	lid := ids.next()
	c.send(map[string]any{"type": "shell_list", "id": lid}, nil)
	m := c.expect("ok", lid)
	found := false
	for _, e := range m.h["shells"].([]any) {
		e := e.(map[string]any)
		if e["shell_id"] == sh {
			found = true
			if e["cwd"] != "/tmp" || e["state"] != "running" || e["cols"].(interface{ String() string }).String() != "80" {
				t.Fatalf("list entry %v", e)
			}
		}
	}
	if !found {
		t.Fatalf("shell_list %v", m)
	}

	// A foreground job gets the terminal's signals; the shell survives.
	c.shellWrite(ids, sh, "sleep 100\n")
	c.readUntil(ids, sh, &cur, "sleep 100\r\n") // the terminal's echo
	time.Sleep(300 * time.Millisecond)
	sid := ids.next()
	c.send(map[string]any{"type": "shell_signal", "id": sid, "shell_id": sh, "signal": "SIGINT"}, nil)
	m = c.expect("ok", sid)
	if m.num("pgid") <= 0 || m.num("pgid") == pid {
		t.Fatalf("signal went to group %d (shell %d), not the job", m.num("pgid"), pid)
	}
	// The job ends at once and the shell prints a new prompt.
	start := time.Now()
	out = c.readUntil(ids, sh, &cur, "# ")
	if time.Since(start) > 2*time.Second || !strings.HasSuffix(out, "# ") {
		t.Fatalf("after SIGINT: %q", out)
	}
	c.run(ids, sh, &cur, "echo alive-$((1+1))", "alive-2")

	// Resize reaches the terminal.
	rid := ids.next()
	c.send(map[string]any{"type": "shell_resize", "id": rid, "shell_id": sh, "cols": 132, "rows": 40}, nil)
	c.expect("ok", rid)
	c.run(ids, sh, &cur, "stty size | tr ' ' x", "40x132")

	// Close: SIGHUP ends it.
	cid := ids.next()
	c.send(map[string]any{"type": "shell_close", "id": cid, "shell_id": sh}, nil)
	m = c.expect("ok", cid)
	if m.num("exit_code") != 129 || m.str("signal") != "SIGHUP" {
		t.Fatalf("close %v", m)
	}
	c.send(map[string]any{"type": "shell_read", "id": cid + 1000, "shell_id": sh, "cursor": 0, "max_bytes": 10}, nil)
	if m := c.expect("error", cid+1000); m.str("code") != "not_found" {
		t.Fatal(m)
	}
}

func TestShellLargeOutputDrops(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	ids := &seq{n: 100}
	sh, _ := c.openShell(ids, nil)
	var cur int64
	c.readUntil(ids, sh, &cur, "# ")
	c.shellWrite(ids, sh, "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo done-$((3+4))\n")
	var out strings.Builder
	deadline := time.Now().Add(20 * time.Second)
	var m msg
	for !strings.Contains(out.String(), "done-7") {
		if time.Now().After(deadline) {
			t.Fatal("output never finished")
		}
		m = c.shellRead(ids, sh, 0, map[string]any{"wait_for_idle_ms": 300, "wait_ms": 4000})
		out.Reset()
		out.Write(m.payload)
	}
	if m.num("end") < 3000000 || m.num("dropped_bytes") <= 0 || m.num("start") != m.num("dropped_bytes") ||
		len(m.payload) != 1<<20 || m.num("next_cursor") != m.num("end") {
		t.Fatalf("read from 0: %v", m)
	}
	// max_bytes bounds what comes back; a cursor past the end is the end.
	m = c.shellRead(ids, sh, m.num("end")-100, map[string]any{"max_bytes": 10})
	if len(m.payload) != 10 || m.num("dropped_bytes") != 0 || m.num("start") != m.num("end")-100 {
		t.Fatalf("bounded read %v", m)
	}
	m = c.shellRead(ids, sh, m.num("end")+5000, nil)
	if len(m.payload) != 0 || m.num("start") != m.num("end") || m.num("dropped_bytes") != 0 {
		t.Fatalf("read past the end %v", m)
	}
}

func TestShellWaits(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	ids := &seq{n: 100}
	sh, _ := c.openShell(ids, nil)
	var cur int64
	c.readUntil(ids, sh, &cur, "# ")
	// wait_for_idle_ms: the answer comes once output paused that long.
	c.shellWrite(ids, sh, "sleep 0.5; echo idle-$((2+3))\n")
	start := time.Now()
	m := c.shellRead(ids, sh, cur, map[string]any{"wait_for_idle_ms": 800, "wait_ms": 4000})
	el := time.Since(start)
	if !strings.Contains(string(m.payload), "idle-5") || m.num("idle_ms") < 800 || el < 1200*time.Millisecond || el > 3500*time.Millisecond {
		t.Fatalf("idle read after %v: %v %q", el, m, m.payload)
	}
	cur = m.num("next_cursor")
	// Without wait_for_idle_ms, wait_ms waits for the first new output ...
	c.shellWrite(ids, sh, "sleep 0.4; echo new-$((1+2))\n")
	c.readUntil(ids, sh, &cur, "\n") // the echo of the typed line
	start = time.Now()
	m = c.shellRead(ids, sh, cur, map[string]any{"wait_ms": 3000})
	if el := time.Since(start); el < 200*time.Millisecond || el > 2500*time.Millisecond || len(m.payload) == 0 {
		t.Fatalf("wait read after %v: %v %q", el, m, m.payload)
	}
	cur = m.num("next_cursor")
	if !strings.HasSuffix(string(m.payload), "# ") {
		c.readUntil(ids, sh, &cur, "# ")
	}
	// ... and gives up after wait_ms when none comes.
	start = time.Now()
	m = c.shellRead(ids, sh, cur, map[string]any{"wait_ms": 600})
	if el := time.Since(start); el < 550*time.Millisecond || el > 2*time.Second || len(m.payload) != 0 {
		t.Fatalf("empty wait after %v: %v", el, m)
	}
	// wait_ms 0 answers at once.
	start = time.Now()
	c.shellRead(ids, sh, cur, nil)
	if el := time.Since(start); el > 300*time.Millisecond {
		t.Fatalf("no-wait read took %v", el)
	}
}

func TestShellsAreIndependentAndOutliveSessions(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	ids := &seq{n: 100}
	a, _ := c.openShell(ids, map[string]any{"cwd": "/"})
	b, _ := c.openShell(ids, map[string]any{"cwd": os.TempDir(), "env": map[string]string{"HOME": t.TempDir(), "WHO": "bee"}})
	var ca, cb int64
	c.readUntil(ids, a, &ca, "# ")
	c.readUntil(ids, b, &cb, "# ")
	c.run(ids, a, &ca, "export Y=a; cd /usr", "# ")
	out := c.run(ids, b, &cb, "echo y-$Y-$WHO-$((5*5))", "-25")
	if !strings.Contains(out, "y--bee-25") {
		t.Fatalf("shell b saw shell a's state: %q", out)
	}

	// A new session (another connection, even) sees the same shells.
	d := newClient(t, Options{})
	d.hello(1, "other")
	d.shellWrite(ids, a, "echo from-d-$Y$((0+0))\n")
	var cd int64 = ca
	d.readUntil(ids, a, &cd, "from-d-a0")

	// A shell that exits keeps its output until closed.
	c.shellWrite(ids, b, "exit 3\n")
	deadline := time.Now().Add(5 * time.Second)
	var m msg
	for {
		m = c.shellRead(ids, b, 0, map[string]any{"wait_ms": 500})
		if m.str("state") == "exited" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("shell did not exit")
		}
	}
	if m.num("exit_code") != 3 || m.h["signal"] != nil || !strings.Contains(string(m.payload), "y--bee-25") {
		t.Fatalf("exited read %v", m)
	}
	wid := ids.next()
	c.send(map[string]any{"type": "shell_write", "id": wid, "shell_id": b}, []byte("echo\n"))
	if m := c.expect("error", wid); m.str("code") != "shell_exited" {
		t.Fatal(m)
	}
	sid := ids.next()
	c.send(map[string]any{"type": "shell_signal", "id": sid, "shell_id": b, "signal": "SIGINT"}, nil)
	if m := c.expect("error", sid); m.str("code") != "shell_exited" {
		t.Fatal(m)
	}
	cid := ids.next()
	c.send(map[string]any{"type": "shell_close", "id": cid, "shell_id": b}, nil)
	if m := c.expect("ok", cid); m.num("exit_code") != 3 || m.h["signal"] != nil {
		t.Fatal(m)
	}
}

func TestShellErrors(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	bad := []map[string]any{
		{"type": "shell_open", "id": 2, "rows": 24},
		{"type": "shell_open", "id": 3, "cols": 0, "rows": 24},
		{"type": "shell_open", "id": 4, "cols": 80, "rows": 501},
		{"type": "shell_open", "id": 5, "cols": 1001, "rows": 24},
		{"type": "shell_open", "id": 6, "cols": 80, "rows": 24, "cwd": ""},
		{"type": "shell_open", "id": 7, "cols": 80, "rows": 24, "env": map[string]string{"A=B": "c"}},
		{"type": "shell_open", "id": 8, "cols": 80, "rows": 24, "secret_env": map[string]string{"K": "not-a-name"}},
		{"type": "shell_open", "id": 9, "cols": 80.5, "rows": 24},
		{"type": "shell_read", "id": 10, "cursor": 0, "max_bytes": 10},
		{"type": "shell_read", "id": 11, "shell_id": "sh-000000000000", "max_bytes": 10},
		{"type": "shell_read", "id": 12, "shell_id": "sh-000000000000", "cursor": -1, "max_bytes": 10},
		{"type": "shell_read", "id": 13, "shell_id": "sh-000000000000", "cursor": 0, "max_bytes": 1<<20 + 1},
		{"type": "shell_read", "id": 14, "shell_id": "sh-000000000000", "cursor": 0, "max_bytes": 1, "wait_ms": 60001},
		{"type": "shell_signal", "id": 15, "shell_id": "sh-000000000000", "signal": "SIGSTOP"},
		{"type": "shell_resize", "id": 16, "shell_id": "sh-000000000000", "cols": 10},
	}
	// Fields are checked before the shell is looked up.
	for _, req := range bad {
		c.send(req, nil)
		id := int64(req["id"].(int))
		if m := c.expect("error", id); m.str("code") != "bad_request" {
			t.Errorf("%v: got %v", req, m)
		}
	}
	c.send(map[string]any{"type": "shell_write", "id": 17, "shell_id": "sh-000000000000"}, make([]byte, 64<<10+1))
	if m := c.expect("error", 17); m.str("code") != "bad_request" {
		t.Error(m)
	}
	c.send(map[string]any{"type": "shell_open", "id": 20, "cols": 80, "rows": 24, "cwd": "/no/such/dir"}, nil)
	if m := c.expect("error", 20); m.str("code") != "exec_failed" {
		t.Fatal(m)
	}
	for i, typ := range []string{"shell_write", "shell_close", "shell_signal", "shell_resize", "shell_read"} {
		id := int64(30 + i)
		c.send(map[string]any{"type": typ, "id": id, "shell_id": "sh-ffffffffffff", "signal": "SIGINT", "cols": 10, "rows": 10,
			"cursor": 0, "max_bytes": 10}, nil)
		if m := c.expect("error", id); m.str("code") != "not_found" {
			t.Errorf("%s: %v", typ, m)
		}
	}
}
