package session

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

func (c *client) serviceStatus(ids *seq, name string) map[string]any {
	c.t.Helper()
	id := ids.next()
	c.send(map[string]any{"type": "service_status", "id": id, "name": name}, nil)
	m := c.expect("ok", id)
	list := m.h["services"].([]any)
	if len(list) != 1 {
		c.t.Fatalf("status %v", m)
	}
	return list[0].(map[string]any)
}

func num(v any) int64 {
	n, ok := v.(interface{ Int64() (int64, error) })
	if !ok {
		return -1
	}
	i, _ := n.Int64()
	return i
}

func (c *client) serviceLogs(ids *seq, name string, extra map[string]any) msg {
	c.t.Helper()
	id := ids.next()
	req := map[string]any{"type": "service_logs", "id": id, "name": name, "max_bytes": 1 << 20}
	for k, v := range extra {
		req[k] = v
	}
	c.send(req, nil)
	return c.expect("ok", id)
}

func TestServices(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	ids := &seq{n: 100}
	env := map[string]string{"HOME": os.TempDir(), "WHAT": "line"}

	// One that prints and stays up.
	id := ids.next()
	c.send(map[string]any{"type": "service_start", "id": id, "name": "web-1", "cwd": "/",
		"shell": `for i in 1 2 3 4 5; do echo $WHAT$i; done; echo oops >&2; sleep 60`, "env": env}, nil)
	m := c.expect("ok", id)
	if m.num("pid") <= 0 || m.num("started_unix_ms") <= 0 {
		t.Fatal(m)
	}
	t.Cleanup(func() {
		c.send(map[string]any{"type": "service_remove", "id": 9999, "name": "web-1"}, nil)
	})
	deadline := time.Now().Add(5 * time.Second)
	for string(c.serviceLogs(ids, "web-1", nil).payload) != "line1\nline2\nline3\nline4\nline5\noops\n" {
		if time.Now().After(deadline) {
			t.Fatal("service output never arrived")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l := c.serviceLogs(ids, "web-1", map[string]any{"tail_lines": 2}); string(l.payload) != "line5\noops\n" ||
		l.num("total_bytes") != 35 || l.num("dropped_bytes") != 0 || l.h["truncated"] != false {
		t.Fatalf("tail: %v %q", l, l.payload)
	}
	if l := c.serviceLogs(ids, "web-1", map[string]any{"max_bytes": 5}); string(l.payload) != "oops\n" || l.h["truncated"] != true {
		t.Fatalf("max_bytes: %v %q", l, l.payload)
	}
	st := c.serviceStatus(ids, "web-1")
	if st["state"] != "running" || st["command"] == "" || num(st["output_bytes"]) != 35 || st["exit_code"] != nil || st["ended_unix_ms"] != nil {
		t.Fatalf("status %v", st)
	}
	// Running: a second start of the name is refused.
	id = ids.next()
	c.send(map[string]any{"type": "service_start", "id": id, "name": "web-1", "shell": "true"}, nil)
	if m := c.expect("error", id); m.str("code") != "already_exists" {
		t.Fatal(m)
	}

	// One that exits at once.
	id = ids.next()
	c.send(map[string]any{"type": "service_start", "id": id, "name": "quick", "shell": "echo bye; exit 4", "env": env}, nil)
	c.expect("ok", id)
	deadline = time.Now().Add(5 * time.Second)
	for st = c.serviceStatus(ids, "quick"); st["state"] != "exited"; st = c.serviceStatus(ids, "quick") {
		if time.Now().After(deadline) {
			t.Fatal("quick service did not exit")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if num(st["exit_code"]) != 4 || st["signal"] != nil || num(st["ended_unix_ms"]) < num(st["started_unix_ms"]) {
		t.Fatalf("exited status %v", st)
	}
	if l := c.serviceLogs(ids, "quick", nil); string(l.payload) != "bye\n" {
		t.Fatalf("logs %q", l.payload)
	}

	// Status of all, sorted by name.
	id = ids.next()
	c.send(map[string]any{"type": "service_status", "id": id}, nil)
	m = c.expect("ok", id)
	var names []string
	for _, s := range m.h["services"].([]any) {
		names = append(names, s.(map[string]any)["name"].(string))
	}
	// (Services of other tests may be there too: the registry is the
	// process's.)
	all := "," + strings.Join(names, ",") + ","
	if !sort.StringsAreSorted(names) || !strings.Contains(all, ",quick,") || !strings.Contains(all, ",web-1,") {
		t.Fatalf("all: %v", names)
	}

	// Stop: SIGTERM ends it.
	id = ids.next()
	c.send(map[string]any{"type": "service_stop", "id": id, "name": "web-1", "grace_ms": 2000}, nil)
	m = c.expect("ok", id)
	if m.num("exit_code") != 143 || m.str("signal") != "SIGTERM" {
		t.Fatalf("stop %v", m)
	}
	if st := c.serviceStatus(ids, "web-1"); st["state"] != "exited" || st["signal"] != "SIGTERM" {
		t.Fatalf("after stop %v", st)
	}
	// Logs stay; stopping again says how it ended.
	if l := c.serviceLogs(ids, "web-1", map[string]any{"tail_lines": 1}); string(l.payload) != "oops\n" {
		t.Fatalf("logs after stop %q", l.payload)
	}
	id = ids.next()
	c.send(map[string]any{"type": "service_stop", "id": id, "name": "quick"}, nil)
	if m := c.expect("ok", id); m.num("exit_code") != 4 || m.h["signal"] != nil {
		t.Fatal(m)
	}
	// An exited service is replaced by a new start.
	id = ids.next()
	c.send(map[string]any{"type": "service_start", "id": id, "name": "quick", "shell": "echo again", "env": env}, nil)
	c.expect("ok", id)
	deadline = time.Now().Add(5 * time.Second)
	for string(c.serviceLogs(ids, "quick", nil).payload) != "again\n" {
		if time.Now().After(deadline) {
			t.Fatal("replacement's output never arrived")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, name := range []string{"quick", "web-1"} {
		id = ids.next()
		c.send(map[string]any{"type": "service_remove", "id": id, "name": name}, nil)
		c.expect("ok", id)
		id = ids.next()
		c.send(map[string]any{"type": "service_status", "id": id, "name": name}, nil)
		if m := c.expect("error", id); m.str("code") != "not_found" {
			t.Fatal(m)
		}
	}
}

func TestServiceErrors(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	bad := []map[string]any{
		{"type": "service_start", "id": 2, "shell": "true"},
		{"type": "service_start", "id": 3, "name": "Bad", "shell": "true"},
		{"type": "service_start", "id": 4, "name": "-x", "shell": "true"},
		{"type": "service_start", "id": 5, "name": "ok"},
		{"type": "service_start", "id": 6, "name": "ok", "shell": ""},
		{"type": "service_start", "id": 7, "name": "ok", "shell": "true", "env": map[string]string{"": "x"}},
		{"type": "service_start", "id": 8, "name": "ok", "shell": "true", "secret_env": map[string]string{"A": "b-c"}},
		{"type": "service_start", "id": 9, "name": strings.Repeat("a", 64), "shell": "true"},
		{"type": "service_logs", "id": 10, "name": "ok"},
		{"type": "service_logs", "id": 11, "name": "ok", "max_bytes": 1<<20 + 1},
		{"type": "service_logs", "id": 12, "name": "ok", "max_bytes": 10, "tail_lines": -1},
		{"type": "service_stop", "id": 13, "name": "ok", "grace_ms": 60001},
		{"type": "service_stop", "id": 14},
		{"type": "service_remove", "id": 15, "name": "a/b"},
		{"type": "probe", "id": 16},
		{"type": "probe", "id": 17, "kind": "file", "path": "relative"},
		{"type": "probe", "id": 18, "kind": "tcp", "port": 0},
		{"type": "probe", "id": 19, "kind": "http", "url": "https://127.0.0.1/"},
		{"type": "probe", "id": 20, "kind": "ping"},
	}
	for _, req := range bad {
		c.send(req, nil)
		id := int64(req["id"].(int))
		if m := c.expect("error", id); m.str("code") != "bad_request" {
			t.Errorf("%v: got %v", req, m)
		}
	}
	for i, typ := range []string{"service_status", "service_logs", "service_stop", "service_remove"} {
		id := int64(30 + i)
		c.send(map[string]any{"type": typ, "id": id, "name": "no-such-service", "max_bytes": 10}, nil)
		if m := c.expect("error", id); m.str("code") != "not_found" {
			t.Errorf("%s: %v", typ, m)
		}
	}
	c.send(map[string]any{"type": "service_start", "id": 40, "name": "badcwd", "shell": "true", "cwd": "/no/such/dir"}, nil)
	if m := c.expect("error", 40); m.str("code") != "exec_failed" {
		t.Fatal(m)
	}
}

func TestProbe(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	dir := t.TempDir()
	file := filepath.Join(dir, "ready")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.Write([]byte("ok"))
			return
		}
		http.Error(w, "nope", http.StatusServiceUnavailable)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln2.Addr().(*net.TCPAddr).Port
	ln2.Close()

	probe := func(id int64, req map[string]any) msg {
		req["type"], req["id"] = "probe", id
		c.send(req, nil)
		return c.expect("ok", id)
	}
	if m := probe(2, map[string]any{"kind": "file", "path": file}); m.h["ready"] != false || m.str("detail") == "" {
		t.Fatal(m)
	}
	os.WriteFile(file, nil, 0o600)
	if m := probe(3, map[string]any{"kind": "file", "path": file}); m.h["ready"] != true {
		t.Fatal(m)
	}
	if m := probe(4, map[string]any{"kind": "tcp", "port": port}); m.h["ready"] != true {
		t.Fatal(m)
	}
	if m := probe(5, map[string]any{"kind": "tcp", "port": closed}); m.h["ready"] != false || m.str("detail") == "" {
		t.Fatal(m)
	}
	if m := probe(6, map[string]any{"kind": "http", "url": fmt.Sprintf("http://127.0.0.1:%d/health", port)}); m.h["ready"] != true || m.str("detail") != "HTTP/1.1 200 OK" {
		t.Fatal(m)
	}
	if m := probe(7, map[string]any{"kind": "http", "url": fmt.Sprintf("http://127.0.0.1:%d/", port)}); m.h["ready"] != false || m.str("detail") != "HTTP/1.1 503 Service Unavailable" {
		t.Fatal(m)
	}
}

// Long commands are cut in service_status so that its header stays within
// the frame limit.
func TestServiceStatusFitsHeader(t *testing.T) {
	c := newClient(t, Options{})
	c.hello(1, "n")
	long := ": '" + strings.Repeat("\x01", 10000) + "'"
	for i := 0; i < 12; i++ {
		id := int64(10 + i)
		c.send(map[string]any{"type": "service_start", "id": id, "name": fmt.Sprintf("long%d", i), "shell": long,
			"env": map[string]string{"HOME": os.TempDir()}}, nil)
		c.expect("ok", id)
		defer c.send(map[string]any{"type": "service_remove", "id": 100 + id, "name": fmt.Sprintf("long%d", i)}, nil)
	}
	c.send(map[string]any{"type": "service_status", "id": 20}, nil)
	m := c.expect("ok", 20)
	list := m.h["services"].([]any)
	if len(list) < 12 {
		t.Fatal(m)
	}
	for _, e := range list {
		if cmd := e.(map[string]any)["command"].(string); len(cmd) > 1100 || !strings.HasPrefix(cmd, ": '") {
			t.Fatalf("command of %d bytes", len(cmd))
		}
	}
}
