package loginenv

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"pyro/guest/internal/reaper"
)

// These tests never use os/exec: its Wait would race with the reaper.

const testBash = "/bin/bash"

const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

func skipWithoutBash(t testing.TB) {
	if _, err := os.Stat(testBash); err != nil {
		t.Skip("no " + testBash)
	}
}

// baseEnv is an exec base environment whose HOME is home (never the
// tester's, so their ~/.profile stays out).
func baseEnv(home string) []string {
	return []string{"HOME=" + home, "LANG=C.UTF-8", "LOGNAME=root", "PATH=" + basePath,
		"SHELL=" + testBash, "TERM=dumb", "USER=root"}
}

// newHome returns a fresh HOME whose ~/.profile is profile ("" for none).
func newHome(t *testing.T, profile string) string {
	t.Helper()
	home := t.TempDir()
	if profile != "" {
		writeProfile(t, home, profile)
	}
	return home
}

func writeProfile(t *testing.T, home, profile string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(home, ".profile"), []byte(profile), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newCache(home string) *Cache {
	return New(Config{Bash: testBash, Env: baseEnv(home), Timeout: 5 * time.Second})
}

// run runs argv with env in / and returns its stdout.
func run(t *testing.T, env []string, argv ...string) []byte {
	t.Helper()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	attr := &syscall.ProcAttr{Dir: "/", Env: env, Files: []uintptr{null.Fd(), pw.Fd(), null.Fd()}}
	_, status, err := reaper.Start().Spawn(argv[0], argv, attr)
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := out.ReadFrom(pr); err != nil {
		t.Fatal(err)
	}
	if st := <-status; st.Wait.ExitStatus() != 0 {
		t.Fatalf("%v: %v", argv, st.Wait)
	}
	return out.Bytes()
}

func TestCaptureMatchesLoginShell(t *testing.T) {
	skipWithoutBash(t)
	home := newHome(t, `echo "a profile may print" ; echo "on both streams" >&2
export PYRO_TEST_VAR='a b=c'
export PYRO_MULTI='line 1
line 2'
export PATH="$HOME/bin:$PATH"
NOT_EXPORTED=1
`)
	c := newCache(home)
	got, ok := c.Get(reaper.Start())
	if !ok {
		t.Fatal("capture failed")
	}
	// What a login shell started the same way reports, minus its own
	// traces (and the profile's output, which precedes env's).
	out := run(t, baseEnv(home), testBash, "-lc", "printf '\\0MARK\\0'; env -0")
	i := bytes.Index(out, []byte("\x00MARK\x00"))
	if i < 0 {
		t.Fatalf("no marker in %q", out)
	}
	want, err := Parse(out[i+len("\x00MARK\x00"):])
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("captured %v\nbash -lc %v", got, want)
	}
	if got["PYRO_TEST_VAR"] != "a b=c" || got["PYRO_MULTI"] != "line 1\nline 2" || !strings.HasPrefix(got["PATH"], home+"/bin:") {
		t.Fatalf("captured %v", got)
	}
	for _, name := range []string{"NOT_EXPORTED", "_", "SHLVL", "PWD", "OLDPWD"} {
		if v, ok := got[name]; ok {
			t.Errorf("%s=%q captured", name, v)
		}
	}
	if got["HOME"] != home || got["LANG"] != "C.UTF-8" {
		t.Errorf("base variables lost: %v", got)
	}
	if c.Captures() != 1 {
		t.Fatalf("%d captures", c.Captures())
	}
}

func TestUnchangedFilesAreNotCapturedAgain(t *testing.T) {
	skipWithoutBash(t)
	c := newCache(newHome(t, "export V=1\n"))
	for i := 0; i < 5; i++ {
		if env, ok := c.Get(reaper.Start()); !ok || env["V"] != "1" {
			t.Fatalf("get %d: %v %v", i, env, ok)
		}
	}
	if c.Captures() != 1 {
		t.Fatalf("%d captures", c.Captures())
	}
}

func TestEditsAreSeen(t *testing.T) {
	skipWithoutBash(t)
	home := newHome(t, "export V=1\n")
	c := newCache(home)
	get := func(want string, captures int) {
		t.Helper()
		env, ok := c.Get(reaper.Start())
		if !ok || env["V"] != want || c.Captures() != captures {
			t.Fatalf("V=%q ok=%v after %d captures; want V=%q after %d", env["V"], ok, c.Captures(), want, captures)
		}
	}
	get("1", 1)

	// A new size and mtime.
	writeProfile(t, home, "export V=22\n")
	get("22", 2)

	// Same size, and the old mtime put back: the ctime still moved.
	fi, err := os.Stat(filepath.Join(home, ".profile"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	writeProfile(t, home, "export V=33\n")
	if err := os.Chtimes(filepath.Join(home, ".profile"), fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	get("33", 3)

	// A file that did not exist: bash now reads ~/.bash_profile instead
	// of ~/.profile.
	if err := os.WriteFile(filepath.Join(home, ".bash_profile"), []byte("export V=bp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	get("bp", 4)

	// A file replaced by another (a new inode).
	tmp := filepath.Join(home, "new")
	if err := os.WriteFile(tmp, []byte("export V=xx\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(home, ".bash_profile")); err != nil {
		t.Fatal(err)
	}
	get("xx", 5)

	// Removed again.
	if err := os.Remove(filepath.Join(home, ".bash_profile")); err != nil {
		t.Fatal(err)
	}
	get("33", 6)
	get("33", 6)
}

// A profile that changes a file it is keyed on must not cause a capture
// per use.
func TestProfileThatTouchesItsOwnFiles(t *testing.T) {
	skipWithoutBash(t)
	c := newCache(newHome(t, "export V=1; date +%s%N >> \"$HOME/.bashrc\"\n"))
	for i := 0; i < 3; i++ {
		if env, ok := c.Get(reaper.Start()); !ok || env["V"] != "1" {
			t.Fatalf("%v %v", env, ok)
		}
	}
	if c.Captures() != 2 {
		t.Fatalf("%d captures", c.Captures())
	}
}

func TestFailedCaptureIsRetriedAfterAWhile(t *testing.T) {
	skipWithoutBash(t)
	home := newHome(t, "exit 1\n")
	c := New(Config{Bash: testBash, Env: baseEnv(home), Timeout: 5 * time.Second, RetryAfter: 500 * time.Millisecond})
	if _, ok := c.Get(reaper.Start()); ok || c.Captures() != 1 {
		t.Fatalf("ok=%v captures=%d", ok, c.Captures())
	}
	// Fixed at once, but not retried yet: the caller runs a login shell,
	// which reads the fixed profile anyway.
	writeProfile(t, home, "export V=fixed\n")
	if _, ok := c.Get(reaper.Start()); ok || c.Captures() != 1 {
		t.Fatalf("retried at once: ok=%v captures=%d", ok, c.Captures())
	}
	time.Sleep(600 * time.Millisecond)
	if env, ok := c.Get(reaper.Start()); !ok || env["V"] != "fixed" || c.Captures() != 2 {
		t.Fatalf("V=%q ok=%v captures=%d", env["V"], ok, c.Captures())
	}
}

func TestProfilesThatLeaveNoEnvironmentFail(t *testing.T) {
	skipWithoutBash(t)
	for name, profile := range map[string]string{
		"exit 1":         "exit 1\n",
		"exit 0":         "exit 0\n",
		"exec elsewhere": "exec true\n",
		"killed":         "kill -KILL $$\n",
		"closes fd 3":    "exec 3>&-\n",
	} {
		c := newCache(newHome(t, profile))
		if env, ok := c.Get(reaper.Start()); ok {
			t.Errorf("%s: captured %v", name, env)
		}
	}
}

func procGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestHangingProfileTimesOutAndIsKilled(t *testing.T) {
	skipWithoutBash(t)
	home := newHome(t, "sleep 30 & echo $! > \"$HOME/bg\"; sleep 30\n")
	c := New(Config{Bash: testBash, Env: baseEnv(home), Timeout: 300 * time.Millisecond})
	start := time.Now()
	if env, ok := c.Get(reaper.Start()); ok {
		t.Fatalf("captured %v", env)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	// Its whole process group went, the background sleep included.
	bg := readPid(t, filepath.Join(home, "bg"))
	deadline := time.Now().Add(3 * time.Second)
	for !procGone(bg) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(bg, syscall.SIGKILL)
			t.Fatal("the profile's background process survived")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A daemon the profile starts inherits the pipe; the capture must not wait
// for it to close it, and leaves it running (its variables may point at it).
func TestBackgroundProcessOfTheProfile(t *testing.T) {
	skipWithoutBash(t)
	home := newHome(t, "sleep 30 & echo $! > \"$HOME/bg\"\nexport V=bg\n")
	c := newCache(home)
	start := time.Now()
	env, ok := c.Get(reaper.Start())
	if !ok || env["V"] != "bg" {
		t.Fatalf("%v %v", env, ok)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	bg := readPid(t, filepath.Join(home, "bg"))
	if procGone(bg) {
		t.Fatal("the background process was killed")
	}
	_ = syscall.Kill(bg, syscall.SIGKILL)
}

func TestLargeEnvironment(t *testing.T) {
	skipWithoutBash(t)
	// Well beyond a pipe's buffer: the reader must keep up with env.
	home := newHome(t, "printf -v x '%20000s' ''; x=${x// /x}; for i in {1..40}; do export BIG_$i=$x; done\n")
	env, ok := newCache(home).Get(reaper.Start())
	if !ok || len(env["BIG_40"]) != 20000 || len(env["BIG_1"]) != 20000 {
		t.Fatalf("ok=%v, %d variables", ok, len(env))
	}
}

func TestConcurrentGetsCaptureOnce(t *testing.T) {
	skipWithoutBash(t)
	c := newCache(newHome(t, "sleep 0.3; export V=1\n"))
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if env, ok := c.Get(reaper.Start()); !ok || env["V"] != "1" {
				errs <- fmt.Sprintf("%v %v", env, ok)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if c.Captures() != 1 {
		t.Fatalf("%d captures", c.Captures())
	}
}

func TestMissingBash(t *testing.T) {
	c := New(Config{Bash: "/nonexistent/bash", Env: baseEnv(t.TempDir())})
	if _, ok := c.Get(reaper.Start()); ok {
		t.Fatal("captured without bash")
	}
}

func TestParse(t *testing.T) {
	env, err := Parse([]byte("A=1\x00B=x=y\x00C=\x00D=two\nlines\x00A=dup\x00_=/usr/bin/env\x00SHLVL=1\x00PWD=/\x00OLDPWD=/tmp\x00BASH_FUNC_f%%=() {  echo hi\n}\x00"))
	want := map[string]string{"A": "1", "B": "x=y", "C": "", "D": "two\nlines", "BASH_FUNC_f%%": "() {  echo hi\n}"}
	if err != nil || !reflect.DeepEqual(env, want) {
		t.Fatalf("%v %v", env, err)
	}
	for _, bad := range []string{"", "A=1", "A=1\x00junk\x00", "A=1\x00=x\x00", "\x00"} {
		if env, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%q parsed as %v", bad, env)
		}
	}
}

// BenchmarkGetCached is what every shell command pays when nothing changed:
// stat'ing the login files.
func BenchmarkGetCached(b *testing.B) {
	skipWithoutBash(b)
	home := b.TempDir()
	if err := os.WriteFile(filepath.Join(home, ".profile"), []byte("export V=1\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	c := newCache(home)
	r := reaper.Start()
	if _, ok := c.Get(r); !ok {
		b.Fatal("capture failed")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := c.Get(r); !ok {
			b.Fatal("capture failed")
		}
	}
	if c.Captures() != 1 {
		b.Fatalf("%d captures", c.Captures())
	}
}
