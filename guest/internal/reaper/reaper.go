// Package reaper collects the exit status of every child of the process.
//
// As PID 1 (or a child subreaper) the agent inherits every orphaned process
// in the VM, and each of them must be waited for or it stays a zombie. A
// single goroutine therefore owns wait4(-1): on SIGCHLD it reaps everything
// that has exited and hands each status to whoever registered that pid.
//
// Consequently nothing else in the process may wait for children (no
// exec.Cmd.Wait, no os.Process.Wait): those calls would race with the reaper
// for the same statuses. Children must be started with Spawn.
package reaper

import (
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Status is the outcome of one reaped child.
type Status struct {
	Pid    int
	Wait   syscall.WaitStatus
	Rusage syscall.Rusage
}

// maxStash bounds the statuses kept for pids nobody registered (orphans
// adopted from other parents). They are only diagnostics, so the oldest are
// forgotten first.
const maxStash = 256

// Reaper dispatches child exit statuses to registered waiters.
type Reaper struct {
	mu      sync.Mutex
	waiters map[int]chan Status
	stash   map[int]Status
	order   []int // stash insertion order, for eviction
	orphans uint64
}

var (
	startOnce sync.Once
	std       *Reaper
)

// Start returns the process-wide reaper, starting its goroutine on first
// use. There can only be one per process because wait4(-1) takes any child.
func Start() *Reaper {
	startOnce.Do(func() {
		std = &Reaper{waiters: map[int]chan Status{}, stash: map[int]Status{}}
		// Buffer of 1: SIGCHLD coalesces anyway and every wake-up drains all
		// exited children, so a pending notification is all we need.
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGCHLD)
		go std.loop(sigs)
	})
	return std
}

func (r *Reaper) loop(sigs chan os.Signal) {
	for {
		r.safeReapAll()
		<-sigs
	}
}

// safeReapAll keeps the reaper alive even if something unexpected panics:
// losing it as PID 1 would leave zombies accumulating forever.
func (r *Reaper) safeReapAll() {
	defer func() {
		if p := recover(); p != nil {
			log.Printf("reaper: panic: %v", p)
		}
	}()
	// Also catches children that exited before signal.Notify was installed.
	r.reapAll()
}

func (r *Reaper) reapAll() {
	for {
		var st Status
		pid, err := syscall.Wait4(-1, &st.Wait, syscall.WNOHANG, &st.Rusage)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 { // ECHILD: no children; 0: none exited yet
			return
		}
		st.Pid = pid
		r.dispatch(st)
	}
}

func (r *Reaper) dispatch(st Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.waiters[st.Pid]; ok {
		delete(r.waiters, st.Pid)
		ch <- st // buffered(1), never blocks
		return
	}
	r.orphans++
	if _, dup := r.stash[st.Pid]; !dup {
		r.order = append(r.order, st.Pid)
	}
	r.stash[st.Pid] = st
	for len(r.order) > maxStash {
		delete(r.stash, r.order[0])
		r.order = r.order[1:]
	}
}

// Spawn forks and execs a child and registers it before the reaper can
// dispatch its status. The registry lock is held across the fork: if the
// child exits at once, the reaper may already have wait4'ed it, but it then
// blocks on the lock until the pid is registered, so the status can never be
// mistaken for an unknown orphan's.
func (r *Reaper) Spawn(argv0 string, argv []string, attr *syscall.ProcAttr) (int, <-chan Status, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(argv0, argv, attr)
	if err != nil {
		return 0, nil, err
	}
	// Any stashed status with this pid belongs to an earlier process that
	// had the same number (pid reuse), never to this child (see above).
	r.unstash(pid)
	ch := make(chan Status, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

func (r *Reaper) unstash(pid int) {
	if _, ok := r.stash[pid]; !ok {
		return
	}
	delete(r.stash, pid)
	for i, p := range r.order {
		if p == pid {
			r.order = append(r.order[:i], r.order[i+1:]...)
			break
		}
	}
}

// Orphan returns the stashed status of an unregistered pid that has been
// reaped, if it is still remembered.
func (r *Reaper) Orphan(pid int) (Status, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.stash[pid]
	return st, ok
}

// OrphanCount returns how many unregistered children have been reaped.
func (r *Reaper) OrphanCount() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.orphans
}
