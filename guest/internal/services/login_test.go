package services

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"pyro/guest/internal/process"
	"pyro/guest/internal/reaper"
)

// loginHome is an empty HOME whose login environment shell commands get,
// which keeps the tester's own login files out.
var loginHome string

func TestMain(m *testing.M) {
	var err error
	if loginHome, err = os.MkdirTemp("", "pyro-login-home"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	process.SetLoginHome(loginHome)
	code := m.Run()
	os.RemoveAll(loginHome)
	os.Exit(code)
}

// A service runs as an exec's shell command does: bash -c with the login
// environment, its env winning.
func TestServiceGetsTheLoginEnvironment(t *testing.T) {
	if _, name := process.Shell(); name != "bash" {
		t.Skip("no bash")
	}
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".profile"), []byte("export V=profile W=profile\nexport PATH=/profile/bin:$PATH\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	process.SetLoginHome(home)
	t.Cleanup(func() { process.SetLoginHome(loginHome) })
	g := NewRegistry(reaper.Start())
	cmd := `echo "$V|$W|$PATH"; shopt -q login_shell && echo login || echo plain`
	if _, err := g.Start(Spec{Name: "login", Command: cmd, Env: map[string]string{"W": "request", "PATH": "/request/bin:/usr/bin:/bin"}}); err != nil {
		t.Fatal(err)
	}
	waitExited(t, g, "login")
	logs, err := g.Logs("login", -1, 1<<20)
	if want := "profile|request|/request/bin:/usr/bin:/bin\nplain\n"; err != nil || string(logs.Data) != want {
		t.Fatalf("output %q %v, want %q", logs.Data, err, want)
	}
}
