package shells

import (
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"pyro/guest/internal/reaper"
)

// These tests never use os/exec: its Wait would race with the reaper.

// opts keeps the tester's ~/.profile out of bash -l, and the shell's
// history out of the tester's home.
func opts(t *testing.T) Options {
	return Options{Cols: 80, Rows: 24, Env: map[string]string{"HOME": t.TempDir()}}
}

// readAll reads from cursor until the output contains want.
func readAll(t *testing.T, sh *Shell, cursor int64, want string) (string, ReadResult) {
	t.Helper()
	var out strings.Builder
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := sh.Read(ReadRequest{Cursor: cursor, MaxBytes: 1 << 20, Wait: 500 * time.Millisecond}, nil)
		out.Write(res.Data)
		cursor = res.Next
		if strings.Contains(out.String(), want) || !res.Running {
			return out.String(), res
		}
		if time.Now().After(deadline) {
			t.Fatalf("never got %q: %q", want, out.String())
		}
	}
}

func write(t *testing.T, sh *Shell, s string) {
	t.Helper()
	errc := make(chan error, 1)
	sh.Write([]byte(s), func(err error) { errc <- err })
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestExitKeepsOutput(t *testing.T) {
	g := NewRegistry(reaper.Start())
	sh, err := g.Open(opts(t))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, sh, 0, "# ")
	write(t, sh, "echo last-$((10+1)); exit 7\n")
	out, res := readAll(t, sh, 0, "\x00never")
	if res.Running || res.Exit.Code != 7 || res.Exit.Signal != "" || !strings.Contains(out, "last-11") {
		t.Fatalf("%+v %q", res, out)
	}
	errc := make(chan error, 1)
	sh.Write([]byte("x"), func(err error) { errc <- err })
	if err := <-errc; !errors.Is(err, ErrExited) {
		t.Fatalf("write to exited: %v", err)
	}
	if _, err := sh.Signal(syscall.SIGINT); !errors.Is(err, ErrExited) {
		t.Fatalf("signal to exited: %v", err)
	}
	if infos := g.List(); len(infos) != 1 || infos[0].Running || infos[0].Exit.Code != 7 {
		t.Fatalf("list %+v", infos)
	}
	if ex, err := g.Close(sh.ID()); err != nil || ex.Code != 7 {
		t.Fatalf("close %+v %v", ex, err)
	}
	if _, err := g.Close(sh.ID()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second close: %v", err)
	}
	if len(g.List()) != 0 {
		t.Fatal("closed shell still listed")
	}
}

func TestLimitAndCloseKills(t *testing.T) {
	g := NewRegistry(reaper.Start())
	var all []*Shell
	defer func() {
		for _, sh := range all {
			g.Close(sh.ID())
		}
	}()
	for i := 0; i < MaxShells; i++ {
		sh, err := g.Open(opts(t))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, sh)
	}
	if _, err := g.Open(opts(t)); !errors.Is(err, ErrTooMany) {
		t.Fatalf("shell %d: %v", MaxShells+1, err)
	}
	// A shell that ignores SIGHUP, busy with a job that does too (so the
	// hangup does not end it either), is killed after the grace period.
	sh := all[0]
	readAll(t, sh, 0, "# ")
	write(t, sh, "trap '' HUP; echo trapped-$((1+1)); sleep 100\n")
	readAll(t, sh, 0, "trapped-2")
	start := time.Now()
	ex, err := g.Close(sh.ID())
	if err != nil || ex.Signal != "SIGKILL" || ex.Code != 137 {
		t.Fatalf("close %+v %v", ex, err)
	}
	if el := time.Since(start); el < CloseGrace || el > CloseGrace+3*time.Second {
		t.Fatalf("close took %v", el)
	}
	all = all[1:]
	sh, err = g.Open(opts(t))
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	all = append(all, sh)
}

func TestOpenFailure(t *testing.T) {
	g := NewRegistry(reaper.Start())
	o := opts(t)
	o.Cwd = "/no/such/dir"
	if _, err := g.Open(o); err == nil || len(g.List()) != 0 {
		t.Fatalf("%v", err)
	}
}
