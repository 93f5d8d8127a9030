package process

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"pyro/guest/internal/loginenv"
	"pyro/guest/internal/reaper"
)

// TestMain keeps the tester's own login files out of every test: shell
// commands get the login environment of an empty HOME (with the machine's
// /etc/profile) unless a test picks another.
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "pyro-login-home")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	SetLoginHome(home)
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}

// useLogin makes shell commands use c (nil: login shells) for this test.
func useLogin(t testing.TB, c *loginenv.Cache) {
	old := loginEnv.Load()
	loginEnv.Store(c)
	t.Cleanup(func() { loginEnv.Store(old) })
}

// loginHome returns a HOME holding a .profile, and makes it the one whose
// login environment shell commands get.
func loginHome(t testing.TB, profile string) string {
	home := t.TempDir()
	writeFile(t, filepath.Join(home, ".profile"), profile, 0o644)
	useLogin(t, newLoginEnv(home))
	return home
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}

func needBash(t testing.TB) {
	if name := func() string { _, n := Shell(); return n }(); name != "bash" {
		t.Skip("no bash")
	}
}

// shellIn runs a shell command whose request env sets HOME to home (so a
// login shell reads the same profile as the capture) plus env.
func shellIn(t *testing.T, home, command string, env map[string]string) (Result, *collected) {
	t.Helper()
	s := Spec{Shell: command, Timeout: 10 * time.Second, MaxOutput: 1 << 20, Env: map[string]string{"HOME": home}}
	for k, v := range env {
		s.Env[k] = v
	}
	return run(t, s)
}

func TestShellGetsTheLoginEnvironment(t *testing.T) {
	needBash(t)
	home := loginHome(t, `echo "profile output"
export PYRO_V='from profile'
export PATH="$HOME/bin:$PATH"
f() { echo "exported function"; }
export -f f
`)
	if err := os.Mkdir(filepath.Join(home, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(home, "bin", "mytool"), "#!/bin/sh\necho my tool\n", 0o755)
	const cmd = `echo "$PYRO_V|$0|$HOME"; mytool; f; shopt -q login_shell && echo login || echo plain`

	res, c := shellIn(t, home, cmd, nil)
	want := "from profile|bash|" + home + "\nmy tool\nexported function\nplain\n"
	if res.ExitCode != 0 || c.stdout() != want || c.stderr() != "" {
		t.Fatalf("stdout %q stderr %q %+v, want %q", c.stdout(), c.stderr(), res, want)
	}
	// The same as a login shell, but for login_shell and the profile's
	// output, which only the capture saw.
	useLogin(t, nil)
	res, c = shellIn(t, home, cmd, nil)
	want = "profile output\nfrom profile|bash|" + home + "\nmy tool\nexported function\nlogin\n"
	if res.ExitCode != 0 || c.stdout() != want {
		t.Fatalf("bash -lc: stdout %q %+v, want %q", c.stdout(), res, want)
	}
}

func TestRequestEnvWinsOverTheProfile(t *testing.T) {
	needBash(t)
	home := loginHome(t, "export FOO=profile BAR=profile\nexport PATH=/profile/bin:$PATH\n")
	res, c := shellIn(t, home, `echo "$FOO|$BAR|$PATH"`, map[string]string{"FOO": "request", "PATH": "/request/bin:/usr/bin:/bin"})
	if want := "request|profile|/request/bin:/usr/bin:/bin\n"; res.ExitCode != 0 || c.stdout() != want {
		t.Fatalf("got %q, want %q", c.stdout(), want)
	}
}

func TestProfileEditSeenByTheNextCommand(t *testing.T) {
	needBash(t)
	home := loginHome(t, "export V=1\n")
	if _, c := shellIn(t, home, `echo $V`, nil); c.stdout() != "1\n" {
		t.Fatalf("got %q", c.stdout())
	}
	writeFile(t, filepath.Join(home, ".profile"), "export V=two\n", 0o644)
	if _, c := shellIn(t, home, `echo $V`, nil); c.stdout() != "two\n" {
		t.Fatalf("after the edit: %q", c.stdout())
	}
	if n := loginEnv.Load().Captures(); n != 2 {
		t.Fatalf("%d captures", n)
	}
}

// A capture that fails leaves the command to a login shell: it behaves as
// it always did, profile and all.
func TestFailedCaptureFallsBackToALoginShell(t *testing.T) {
	needBash(t)
	for name, profile := range map[string]string{
		"exits": `[ -n "$PYRO_RUN" ] || exit 1` + "\nexport V=ran\n",
		"hangs": `[ -n "$PYRO_RUN" ] || sleep 30` + "\nexport V=ran\n",
	} {
		home := t.TempDir()
		writeFile(t, filepath.Join(home, ".profile"), profile, 0o644)
		cache := loginenv.New(loginenv.Config{Bash: bashPath, Env: Env(bashPath, map[string]string{"HOME": home}), Timeout: 300 * time.Millisecond})
		useLogin(t, cache)
		// The capture runs without the request's env, so it fails; the
		// command's own login shell has PYRO_RUN and gets through.
		res, c := shellIn(t, home, `echo $V; shopt -q login_shell && echo login`, map[string]string{"PYRO_RUN": "1"})
		if res.ExitCode != 0 || c.stdout() != "ran\nlogin\n" || cache.Captures() != 1 {
			t.Fatalf("%s: stdout %q %+v after %d captures", name, c.stdout(), res, cache.Captures())
		}
		// Not retried for a while.
		if res, c := shellIn(t, home, `echo $V`, map[string]string{"PYRO_RUN": "1"}); c.stdout() != "ran\n" || res.ExitCode != 0 || cache.Captures() != 1 {
			t.Fatalf("%s: again: %q %+v after %d captures", name, c.stdout(), res, cache.Captures())
		}
	}

	// A profile that always exits: the command does not run, as with bash -lc.
	home := loginHome(t, "exit 3\n")
	res, c := shellIn(t, home, `echo never`, nil)
	if res.ExitCode != 3 || c.stdout() != "" {
		t.Fatalf("stdout %q %+v", c.stdout(), res)
	}
}

// Exit codes, signals, $0 and the two streams are those of a login shell.
func TestShellBehavesAsALoginShellDoes(t *testing.T) {
	needBash(t)
	home := loginHome(t, "export V=1\n")
	cached := loginEnv.Load()
	for _, cmd := range []string{
		`echo "$0 $#"; echo err >&2; exit 7`,
		`kill -TERM $$`,
		`sh -c 'kill -INT $$'`,
		`exec sleep 0`,
		`echo $V; false`,
		`cd /tmp && pwd && echo $PWD $SHLVL`,
	} {
		useLogin(t, cached)
		got, gc := shellIn(t, home, cmd, nil)
		useLogin(t, nil)
		want, wc := shellIn(t, home, cmd, nil)
		if got.ExitCode != want.ExitCode || got.Signal != want.Signal || gc.stdout() != wc.stdout() || gc.stderr() != wc.stderr() {
			t.Errorf("%s:\n cached %+v %q %q\n bash -lc %+v %q %q", cmd, got, gc.stdout(), gc.stderr(), want, wc.stdout(), wc.stderr())
		}
	}
}

func TestConcurrentExecsCaptureOnce(t *testing.T) {
	needBash(t)
	home := loginHome(t, "sleep 0.3; export V=1\n")
	var wg sync.WaitGroup
	outs := make([]string, 4)
	for i := range outs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p, err := Start(reaper.Start(), Spec{Shell: "echo $V", Timeout: 10 * time.Second, MaxOutput: 100, Env: map[string]string{"HOME": home}})
			if err != nil {
				outs[i] = err.Error()
				return
			}
			c := &collected{}
			p.Wait(c.emit)
			outs[i] = c.stdout()
		}(i)
	}
	wg.Wait()
	if strings.Join(outs, "") != strings.Repeat("1\n", len(outs)) {
		t.Fatalf("outputs %q", outs)
	}
	if n := loginEnv.Load().Captures(); n != 1 {
		t.Fatalf("%d captures", n)
	}
}

func TestArgvIgnoresTheLoginEnvironment(t *testing.T) {
	needBash(t)
	loginHome(t, "export V=profile\n")
	res, c := run(t, Spec{Argv: []string{"sh", "-c", `echo "[$V]"`}, Timeout: 5 * time.Second, MaxOutput: 100})
	if res.ExitCode != 0 || c.stdout() != "[]\n" || loginEnv.Load().Captures() != 0 {
		t.Fatalf("got %q, %d captures", c.stdout(), loginEnv.Load().Captures())
	}
}

// BenchmarkExecShellTrue measures an exec of `true` as a shell command:
// with the cached login environment (bash -c), as a login shell (bash -lc,
// what agents before 1.3 ran) and, for scale, as argv (no shell at all).
// HOME holds Debian's stock root .profile and .bashrc.
func BenchmarkExecShellTrue(b *testing.B) {
	if _, name := Shell(); name != "bash" {
		b.Skip("no bash")
	}
	home := b.TempDir()
	writeFile(b, filepath.Join(home, ".profile"), "# ~/.profile: executed by Bourne-compatible login shells.\n\nif [ \"$BASH\" ]; then\n  if [ -f ~/.bashrc ]; then\n    . ~/.bashrc\n  fi\nfi\n", 0o644)
	writeFile(b, filepath.Join(home, ".bashrc"), "# ~/.bashrc: executed by bash(1) for non-login shells.\n\n# export LS_OPTIONS='--color=auto'\n# eval \"$(dircolors)\"\n", 0o644)
	r := reaper.Start()
	exec := func(b *testing.B, s Spec) {
		for i := 0; i < b.N; i++ {
			p, err := Start(r, s)
			if err != nil {
				b.Fatal(err)
			}
			if res := p.Wait(func(Stream, []byte) {}); res.ExitCode != 0 {
				b.Fatalf("%+v", res)
			}
		}
	}
	shell := Spec{Shell: "true", Timeout: 10 * time.Second, MaxOutput: 1024, Env: map[string]string{"HOME": home}}
	b.Run("cached", func(b *testing.B) {
		cache := newLoginEnv(home)
		useLogin(b, cache)
		if _, ok := cache.Get(r); !ok {
			b.Fatal("capture failed")
		}
		b.ResetTimer()
		exec(b, shell)
	})
	b.Run("login", func(b *testing.B) {
		useLogin(b, nil)
		exec(b, shell)
	})
	b.Run("argv", func(b *testing.B) {
		exec(b, Spec{Argv: []string{"/bin/true"}, Timeout: 10 * time.Second, MaxOutput: 1024})
	})
}
