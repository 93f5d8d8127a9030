package services

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"pyro/guest/internal/process"
	"pyro/guest/internal/reaper"
)

// These tests never use os/exec: its Wait would race with the reaper.

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "0", "web", "my-app.v2_x", strings.Repeat("a", 63)} {
		if !ValidName(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", "-a", ".a", "_a", "A", "a/b", "a b", "..", strings.Repeat("a", 64)} {
		if ValidName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// env keeps the tester's ~/.profile out of a login shell (the fallback when
// there is no login environment).
func env() map[string]string { return map[string]string{"HOME": os.TempDir()} }

func waitExited(t *testing.T, g *Registry, name string) Info {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		infos, err := g.Status(name)
		if err != nil {
			t.Fatal(err)
		}
		if !infos[0].Running {
			return infos[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("service %s did not exit", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestLifecycle(t *testing.T) {
	g := NewRegistry(reaper.Start())
	info, err := g.Start(Spec{Name: "quick", Command: "echo out; echo err >&2; exit 4", Env: env()})
	if err != nil || info.Pid <= 0 || !info.Running {
		t.Fatalf("%+v %v", info, err)
	}
	ex := waitExited(t, g, "quick")
	if ex.Exit.Code != 4 || ex.Exit.Signal != "" || ex.Ended.Before(ex.Started) || ex.OutputBytes != 8 {
		t.Fatalf("%+v", ex)
	}
	logs, err := g.Logs("quick", -1, 1<<20)
	if err != nil || string(logs.Data) != "out\nerr\n" && string(logs.Data) != "err\nout\n" || logs.Total != 8 || logs.Dropped != 0 {
		t.Fatalf("%+v %v", logs, err)
	}
	// Stopping an exited service tells how it ended.
	if e, err := g.Stop("quick", time.Second); err != nil || e.Code != 4 {
		t.Fatalf("%+v %v", e, err)
	}
	// An exited service is replaced by a new start.
	if _, err := g.Start(Spec{Name: "quick", Command: "sleep 30", Env: env()}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Start(Spec{Name: "quick", Command: "true", Env: env()}); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("second start: %v", err)
	}
	if logs, _ := g.Logs("quick", -1, 100); logs.Total != 0 {
		t.Fatalf("buffer not dropped: %+v", logs)
	}
	if err := g.Remove("quick"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Status("quick"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("status after remove: %v", err)
	}
	var se *process.StartError
	if _, err := g.Start(Spec{Name: "badcwd", Command: "true", Cwd: "/no/such/dir"}); !errors.As(err, &se) {
		t.Fatalf("bad cwd: %v", err)
	}
}

func TestStopEscalates(t *testing.T) {
	g := NewRegistry(reaper.Start())
	// Ignores SIGTERM (and so does the sleep it waits for).
	if _, err := g.Start(Spec{Name: "stubborn", Command: "trap '' TERM; echo ready; sleep 60; echo never", Env: env()}); err != nil {
		t.Fatal(err)
	}
	defer g.Remove("stubborn")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l, _ := g.Logs("stubborn", -1, 100); string(l.Data) == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no output")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	e, err := g.Stop("stubborn", 300*time.Millisecond)
	if err != nil || e.Code != 137 || e.Signal != "SIGKILL" {
		t.Fatalf("%+v %v", e, err)
	}
	if el := time.Since(start); el < 300*time.Millisecond || el > 3*time.Second {
		t.Fatalf("stop took %v", el)
	}
}

func TestLogsTailAndMax(t *testing.T) {
	g := NewRegistry(reaper.Start())
	if _, err := g.Start(Spec{Name: "lines", Command: "for i in 1 2 3 4 5; do echo line$i; done", Env: env()}); err != nil {
		t.Fatal(err)
	}
	defer g.Remove("lines")
	waitExited(t, g, "lines")
	cases := []struct {
		tail      int64
		max       int
		want      string
		truncated bool
	}{
		{-1, 1000, "line1\nline2\nline3\nline4\nline5\n", false},
		{2, 1000, "line4\nline5\n", false},
		{0, 1000, "", false},
		{2, 8, "4\nline5\n", true},
		{100, 1000, "line1\nline2\nline3\nline4\nline5\n", false},
	}
	for _, c := range cases {
		l, err := g.Logs("lines", c.tail, c.max)
		if err != nil || string(l.Data) != c.want || l.Truncated != c.truncated || l.Total != 30 {
			t.Errorf("tail %d max %d: %q %+v %v", c.tail, c.max, l.Data, l, err)
		}
	}
}

func TestLimit(t *testing.T) {
	g := NewRegistry(reaper.Start())
	for i := 0; i < MaxServices; i++ {
		if _, err := g.Start(Spec{Name: fmt.Sprintf("s%d", i), Command: "true", Env: env()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := g.Start(Spec{Name: "onemore", Command: "true", Env: env()}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("%v", err)
	}
	for i := 0; i < MaxServices; i++ {
		if err := g.Remove(fmt.Sprintf("s%d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestProbeValidate(t *testing.T) {
	good := []Probe{{Kind: ProbeFile, Path: "/x"}, {Kind: ProbeTCP, Port: 80}, {Kind: ProbeHTTP, URL: "http://127.0.0.1:8080/health"}}
	for _, p := range good {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v: %v", p, err)
		}
	}
	bad := []Probe{{Kind: "dns"}, {Kind: ProbeFile}, {Kind: ProbeFile, Path: "rel"}, {Kind: ProbeTCP}, {Kind: ProbeTCP, Port: 70000},
		{Kind: ProbeHTTP, URL: "https://127.0.0.1/"}, {Kind: ProbeHTTP, URL: "ftp://x"}, {Kind: ProbeHTTP}, {Kind: ProbeHTTP, URL: "http://"}}
	for _, p := range bad {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}

func TestProbeRun(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "ready")
	if ok, _ := (Probe{Kind: ProbeFile, Path: file}).Run(); ok {
		t.Fatal("missing file is ready")
	}
	os.WriteFile(file, nil, 0o644)
	if ok, d := (Probe{Kind: ProbeFile, Path: file}).Run(); !ok {
		t.Fatalf("existing file: %s", d)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("fine")) })
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/broken", http.StatusFound) })
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusInternalServerError) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) { time.Sleep(3 * time.Second) })
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()

	if ok, d := (Probe{Kind: ProbeTCP, Port: port}).Run(); !ok {
		t.Fatalf("tcp: %s", d)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	for _, c := range []struct {
		path   string
		ready  bool
		detail string
	}{
		{"/ok", true, "HTTP/1.1 200 OK"},
		{"/moved", true, "HTTP/1.1 302 Found"}, // not followed to the 500
		{"/broken", false, "HTTP/1.1 500 Internal Server Error"},
	} {
		ok, d := (Probe{Kind: ProbeHTTP, URL: base + c.path}).Run()
		if ok != c.ready || d != c.detail {
			t.Errorf("%s: %v %q", c.path, ok, d)
		}
	}
	start := time.Now()
	if ok, _ := (Probe{Kind: ProbeHTTP, URL: base + "/slow"}).Run(); ok || time.Since(start) > HTTPProbeTimeout+time.Second {
		t.Errorf("slow: %v after %v", ok, time.Since(start))
	}

	// A port nothing listens on any more.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln2.Addr().(*net.TCPAddr).Port
	ln2.Close()
	if ok, d := (Probe{Kind: ProbeTCP, Port: closed}).Run(); ok || d == "" {
		t.Errorf("closed tcp: %v %q", ok, d)
	}
	if ok, d := (Probe{Kind: ProbeHTTP, URL: fmt.Sprintf("http://127.0.0.1:%d/", closed)}).Run(); ok || d == "" {
		t.Errorf("closed http: %v %q", ok, d)
	}
}
