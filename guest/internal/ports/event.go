package ports

import (
	"io"
	"os"
	"sync/atomic"
	"syscall"
)

// eventReader reads a port opened non-blocking, waiting in Go's network
// poller instead of re-reading on a timer, so an idle port costs nothing:
// no thread sits in a read, and the runtime has no reason to wake up.
//
// A virtio-serial port reads 0 bytes at once while no host is connected,
// and its poll reports it readable (and hung up) all that time; the poller
// registers it edge-triggered, so it is woken only when the driver wakes
// the port: a host connecting or disconnecting, or data coming in. The first
// 0-byte read after data is the host going away and is returned as io.EOF
// (it ends the session); after that, a 0-byte read means no host yet, and
// the reader waits for the port's next event and reads again. An event that
// comes between a read and the wait is kept by the poller, not lost: the
// poller's readiness is reset before each read, never after.
type eventReader struct {
	raw syscall.RawConn
	// idle is true once the end of a connection has been reported: 0-byte
	// reads then mean "no host" rather than "host gone".
	idle bool
	// reads counts read(2) calls and eofs the ends of connections, for
	// tests.
	reads, eofs atomic.Int64
}

// newEventReader reports nil when f cannot be waited on through the poller
// (it is not a non-blocking character device or FIFO).
func newEventReader(r io.Reader) *eventReader {
	f, ok := r.(*os.File)
	if !ok {
		return nil
	}
	fi, err := f.Stat()
	if err != nil || fi.Mode()&(os.ModeCharDevice|os.ModeNamedPipe) == 0 {
		return nil
	}
	raw, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	// A blocking fd is not registered with the poller; it would block in
	// read(2) and never report EAGAIN, so the timer loop serves it instead.
	nonblocking := false
	if err := raw.Control(func(fd uintptr) {
		flags, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		nonblocking = errno == 0 && flags&syscall.O_NONBLOCK != 0
	}); err != nil || !nonblocking {
		return nil
	}
	return &eventReader{raw: raw}
}

func (r *eventReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var rerr error
	err := r.raw.Read(func(fd uintptr) bool {
		for {
			r.reads.Add(1)
			n, rerr = syscall.Read(int(fd), p)
			switch {
			case rerr == syscall.EINTR:
				continue
			case rerr == syscall.EAGAIN:
				// A host is connected and has sent nothing yet.
				return false
			case rerr != nil:
				return true
			case n > 0:
				r.idle = false
				return true
			case !r.idle:
				// The host went away: the session ends.
				r.idle = true
				r.eofs.Add(1)
				rerr = io.EOF
				return true
			default:
				// Still no host: wait for the port's next event.
				return false
			}
		}
	})
	if rerr != nil {
		n = 0
	}
	if err != nil {
		return 0, err
	}
	return n, rerr
}
