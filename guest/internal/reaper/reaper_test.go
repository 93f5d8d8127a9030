package reaper

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests never use os/exec: its Wait would race with the reaper.

func spawnSh(t *testing.T, r *Reaper, script string, stdout *os.File) (int, <-chan Status) {
	t.Helper()
	files := []uintptr{0, 1, 2}
	if stdout != nil {
		files[1] = stdout.Fd()
	}
	pid, ch, err := r.Spawn("/bin/sh", []string{"sh", "-c", script}, &syscall.ProcAttr{Files: files})
	if err != nil {
		t.Fatal(err)
	}
	return pid, ch
}

func waitStatus(t *testing.T, ch <-chan Status) Status {
	t.Helper()
	select {
	case st := <-ch:
		return st
	case <-time.After(5 * time.Second):
		t.Fatal("no exit status within 5s")
	}
	panic("unreachable")
}

func TestSpawnExitStatus(t *testing.T) {
	r := Start()
	pid, ch := spawnSh(t, r, "exit 3", nil)
	st := waitStatus(t, ch)
	if st.Pid != pid || !st.Wait.Exited() || st.Wait.ExitStatus() != 3 {
		t.Fatalf("got pid %d status %v, want pid %d exit 3", st.Pid, st.Wait, pid)
	}
	pid, ch = spawnSh(t, r, "kill -9 $$", nil)
	st = waitStatus(t, ch)
	if !st.Wait.Signaled() || st.Wait.Signal() != syscall.SIGKILL {
		t.Fatalf("pid %d: got %v, want SIGKILL", pid, st.Wait)
	}
}

// Many children that exit immediately stress the window between fork and
// registration: every status must still reach its waiter.
func TestNoLostStatuses(t *testing.T) {
	r := Start()
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(code int) {
			defer wg.Done()
			_, ch, err := r.Spawn("/bin/sh", []string{"sh", "-c", "exit " + strconv.Itoa(code)}, &syscall.ProcAttr{})
			if err != nil {
				errs <- err
				return
			}
			select {
			case st := <-ch:
				if st.Wait.ExitStatus() != code {
					errs <- fmt.Errorf("want exit %d, got %v", code, st.Wait)
				}
			case <-time.After(5 * time.Second):
				errs <- fmt.Errorf("exit %d: status lost", code)
			}
		}(i % 100)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// procState returns the state letter from /proc/pid/stat, or "" if the
// process no longer exists.
func procState(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return ""
	}
	return s[i+2 : i+3]
}

// As a child subreaper the test process inherits orphaned grandchildren,
// exactly like PID 1 does in the VM. Without the reaper they would stay
// zombies ("Z") forever.
func TestOrphansAreReaped(t *testing.T) {
	const prSetChildSubreaper = 36
	if _, _, e := syscall.Syscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); e != 0 {
		t.Skipf("PR_SET_CHILD_SUBREAPER: %v", e)
	}
	r := Start()
	before := r.OrphanCount()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	// The shell backgrounds a short sleep, prints its pid and exits, so the
	// sleep is reparented to us and exits 200 ms later.
	_, ch := spawnSh(t, r, "sleep 0.2 </dev/null >/dev/null 2>&1 & echo $!", pw)
	pw.Close()
	out := new(bytes.Buffer)
	if _, err := out.ReadFrom(pr); err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("bad pid %q", out.String())
	}
	waitStatus(t, ch)
	deadline := time.Now().Add(5 * time.Second)
	for {
		state := procState(orphan)
		if state == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d still present in state %q", orphan, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, ok := r.Orphan(orphan)
	if !ok || !st.Wait.Exited() || st.Wait.ExitStatus() != 0 {
		t.Fatalf("orphan %d status not stashed: %v %v", orphan, ok, st.Wait)
	}
	if r.OrphanCount() <= before {
		t.Fatal("orphan count did not increase")
	}
}
