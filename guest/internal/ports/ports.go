// Package ports finds and serves the agent's virtio-serial ports.
package ports

import (
	"errors"
	"io"
	"log"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"syscall"
	"time"

	"pyro/guest/internal/session"
)

// NamePrefix is the prefix of the port names the host creates
// (org.pyro.agent.0 … org.pyro.agent.3).
const NamePrefix = "org.pyro.agent."

// Timing of the port handling. A port opened by Open is waited on by
// events (see eventReader); these re-read intervals apply only to what
// cannot be (a socket or pipe standing in for a port in tests).
const (
	// ReconnectPoll is how often port 0 is re-read while no host is
	// connected (a read then returns 0 immediately instead of blocking).
	ReconnectPoll = 10 * time.Millisecond
	// SpareReconnectPoll is the same for the other ports.
	SpareReconnectPoll = 50 * time.Millisecond
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

// Open opens a port read-write and non-blocking, so that os.NewFile
// registers it with Go's poller: Serve then waits for the port's events
// (eventReader), and a write the host cannot take yet parks its goroutine
// instead of a thread.
func Open(path string) (*os.File, error) {
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// PollInterval is how often Serve re-reads a port named name while no host
// is connected.
func PollInterval(name string) time.Duration {
	if name == NamePrefix+"0" {
		return ReconnectPoll
	}
	return SpareReconnectPoll
}

// Serve runs sessions on rw forever: one Serve call per host connection.
// A port from Open is waited on by events while no host is connected;
// anything else is re-read every poll (0: ReconnectPoll). Serve returns only
// when stop is closed (nil means never), which tests use; a port waiting
// for events notices that at its next event.
// Panics in a session are logged and the port is served again, because as
// PID 1 the agent must never die.
func Serve(rw io.ReadWriter, opts session.Options, poll time.Duration, stop <-chan struct{}) {
	if poll <= 0 {
		poll = ReconnectPoll
	}
	if opts.Logf == nil {
		opts.Logf = log.Printf
	}
	serve(rw, rw, opts, poll, stop)
}

// serve is Serve with the port's two directions apart, so tests can read a
// FIFO, which behaves like a port for reading, and collect the replies.
func serve(in io.Reader, out io.Writer, opts session.Options, poll time.Duration, stop <-chan struct{}) {
	conn := session.NewConn(out, opts)
	defer conn.Close()
	r := in
	events, _ := in.(*eventReader)
	if events == nil {
		events = newEventReader(in)
	}
	if events != nil {
		r = events
	}
	lastErr := ""
	for {
		select {
		case <-stop:
			return
		default:
		}
		err := serveOnce(conn, r, opts)
		switch {
		case events != nil && (err == nil || errors.Is(err, io.EOF)):
			// The next read waits for a host by itself.
		case err == nil || errors.Is(err, io.EOF):
			time.Sleep(poll)
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
