// Package ports finds and serves the agent's virtio-serial ports.
package ports

import (
	"errors"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"pyro/guest/internal/session"
)

// NamePrefix is the prefix of the port names the host creates
// (org.pyro.agent.0 … org.pyro.agent.3).
const NamePrefix = "org.pyro.agent."

// Timing of the port handling.
const (
	// ReconnectPoll is how often a port is re-read while no host is
	// connected (a read then returns 0 immediately instead of blocking),
	// when nothing wakes the loop sooner (see Waker).
	ReconnectPoll = 10 * time.Millisecond
	// WakeRecheck is how often a port whose loop has a Waker is re-read
	// anyway, in case a wake-up was lost.
	WakeRecheck = 250 * time.Millisecond
	// errorBackoff slows down the loop after unexpected read errors.
	errorBackoff = 100 * time.Millisecond
)

// Port is one discovered virtio-serial port.
type Port struct {
	Name string // e.g. org.pyro.agent.0
	Path string // e.g. /dev/vport0p1
}

// Finder locates ports; the roots are fields so tests can use a fake tree.
type Finder struct {
	SysRoot string // "/sys"
	DevRoot string // "/dev"
}

// Scan lists the agent ports currently visible, sorted by name. A port
// counts only once its device node exists, since devtmpfs creates nodes
// asynchronously to sysfs.
func (f Finder) Scan() []Port {
	sys, dev := f.SysRoot, f.DevRoot
	if sys == "" {
		sys = "/sys"
	}
	if dev == "" {
		dev = "/dev"
	}
	dirs, _ := os.ReadDir(filepath.Join(sys, "class", "virtio-ports"))
	var ports []Port
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(sys, "class", "virtio-ports", d.Name(), "name"))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(b))
		if !isAgentPortName(name) {
			continue
		}
		path := filepath.Join(dev, d.Name())
		if _, err := os.Stat(path); err != nil {
			continue
		}
		ports = append(ports, Port{Name: name, Path: path})
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i].Name < ports[j].Name })
	return ports
}

func isAgentPortName(name string) bool {
	n := strings.TrimPrefix(name, NamePrefix)
	if n == name || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Wait polls until at least one port is visible or timeout elapses. Ports
// are announced by the host one control message at a time, so after the
// first appears it waits briefly for the rest.
func (f Finder) Wait(timeout time.Duration) ([]Port, error) {
	deadline := time.Now().Add(timeout)
	for {
		if ports := f.Scan(); len(ports) > 0 {
			time.Sleep(100 * time.Millisecond)
			return f.Scan(), nil
		}
		if time.Now().After(deadline) {
			return nil, errors.New("no virtio-serial port named " + NamePrefix + "N found")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Open opens a port read-write. The fd is deliberately left in blocking
// mode (os.NewFile does not register it with the poller): a blocking read
// on a virtio port waits for data while a host is connected and returns 0
// at once while none is, which is exactly the behaviour Serve relies on.
func Open(path string) (*os.File, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// OpenAsync opens a port like Open and asks the kernel to send this process
// SIGIO whenever the port changes: the host connects or disconnects, or data
// arrives. With WakeOnSIGIO, an idle port then costs nothing, where polling
// it every ReconnectPoll kept an idle VM's CPU busy under emulation.
func OpenAsync(path string) (*os.File, error) {
	f, err := Open(path)
	if err != nil {
		return nil, err
	}
	fd := f.Fd()
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETOWN, uintptr(os.Getpid())); e != 0 {
		f.Close()
		return nil, &os.PathError{Op: "fcntl F_SETOWN", Path: path, Err: e}
	}
	flags, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
	if e == 0 {
		_, _, e = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETFL, flags|syscall.O_ASYNC)
	}
	if e != 0 {
		f.Close()
		return nil, &os.PathError{Op: "fcntl O_ASYNC", Path: path, Err: e}
	}
	return f, nil
}

// Waker tells every Serve loop that something may have changed on a port.
// A loop takes Next before reading, so a wake-up that comes between a read
// returning EOF and the loop starting to wait is not lost.
type Waker struct {
	// Recheck bounds the wait when no wake-up comes (0: WakeRecheck).
	Recheck time.Duration
	mu      sync.Mutex
	ch      chan struct{}
}

// Next returns a channel that is closed by the next Wake.
func (w *Waker) Next() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

// Wake releases everyone waiting on a channel from Next.
func (w *Waker) Wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
	}
	w.ch = make(chan struct{})
}

func (w *Waker) recheck() time.Duration {
	if w.Recheck > 0 {
		return w.Recheck
	}
	return WakeRecheck
}

// WakeOnSIGIO wakes w every time the process receives SIGIO. SIGIO does not
// say which port changed, so every idle loop re-reads its port.
func WakeOnSIGIO(w *Waker) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGIO)
	go func() {
		for range ch {
			w.Wake()
		}
	}()
}

// Serve runs sessions on rw forever: one Serve call per host connection.
// While no host is connected it waits for wake (nil: re-polls every
// ReconnectPoll). It returns only when stop is closed (nil means never),
// which tests use. Panics in a session are logged and the port is served
// again, because as PID 1 the agent must never die.
func Serve(rw io.ReadWriter, opts session.Options, wake *Waker, stop <-chan struct{}) {
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	conn := session.NewConn(rw, opts)
	defer conn.Close()
	lastErr := ""
	for {
		select {
		case <-stop:
			return
		default:
		}
		var woken <-chan struct{}
		if wake != nil {
			woken = wake.Next()
		}
		err := serveOnce(conn, rw, opts)
		switch {
		case err == nil || errors.Is(err, io.EOF):
			if wake == nil {
				time.Sleep(ReconnectPoll)
				break
			}
			timer := time.NewTimer(wake.recheck())
			select {
			case <-woken:
			case <-timer.C:
			case <-stop:
			}
			timer.Stop()
		default:
			// A persistent error would repeat ten times a second; the
			// console only needs to hear about it once.
			if err.Error() != lastErr {
				lastErr = err.Error()
				opts.Logf("port: read: %v", err)
			}
			time.Sleep(errorBackoff)
		}
	}
}

func serveOnce(conn *session.Conn, r io.Reader, opts session.Options) (err error) {
	defer func() {
		if p := recover(); p != nil {
			opts.Logf("port: panic: %v\n%s", p, debug.Stack())
			err = nil
		}
	}()
	return conn.Serve(r)
}
