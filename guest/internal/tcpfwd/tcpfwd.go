// Package tcpfwd carries TCP connections to services in the guest over a
// session: the host accepts a connection on a published port, asks the
// agent to connect to 127.0.0.1:PORT in the guest, and the two relay bytes
// as frames, one request id per connection.
//
// Every frame of a connection towards the host is sent by one goroutine
// (tcp_opened, tcp_data…, tcp_eof, tcp_closed, in that order) through the
// session's writer, whose bounded queue back-pressures a fast guest side.
// Bytes from the host wait in a bounded per-connection queue; when it is
// full the session's reader waits for the guest side to take them.
package tcpfwd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"pyro/guest/internal/protocol"
)

// Limits and timings.
const (
	// MaxConns bounds the connections of one session.
	MaxConns = 256
	// ConnectTimeout bounds tcp_open's connect.
	ConnectTimeout = 5 * time.Second
	// MaxPending bounds the bytes from the host waiting for the guest
	// side of one connection (one frame more is always accepted into an
	// empty queue).
	MaxPending = 256 << 10
	// StallTimeout is how long the session waits for the guest side to
	// make room in a full queue before the connection is closed.
	StallTimeout = 10 * time.Second
	// DataChunk is the largest tcp_data payload.
	DataChunk = 64 << 10
)

// ErrBadRequest wraps refusals of invalid tcp_open requests.
var ErrBadRequest = errors.New("bad request")

// Sender queues one frame for the session's writer; it returns false once
// the session has ended.
type Sender func(header any, payload []byte) bool

// Table is the connections of one session.
type Table struct {
	send Sender
	done <-chan struct{} // closed when the session ends

	mu     sync.Mutex
	conns  map[uint64]*conn
	closed bool
}

// NewTable returns the table of a session that sends frames with send and
// ends when done is closed (the caller then calls CloseAll).
func NewTable(send Sender, done <-chan struct{}) *Table {
	return &Table{send: send, done: done, conns: map[uint64]*conn{}}
}

type conn struct {
	t  *Table
	id uint64

	finished chan struct{} // closed by finish
	wake     chan struct{} // the writer has work (buffered 1)
	room     chan struct{} // the queue shrank (buffered 1)

	mu       sync.Mutex
	nc       *net.TCPConn // nil until connected
	pending  [][]byte
	queued   int
	shutdown bool // host half-closed: shut down the guest side after pending
	wrDone   bool // the guest side's write half is shut down
	rdEOF    bool // the guest side sent EOF
	over     bool
	reason   string // why it failed; "" for an orderly close
}

// Open starts connecting connection id to 127.0.0.1:port; the replies
// follow asynchronously. Only refusals of the request are returned.
func (t *Table) Open(id uint64, port int) error {
	if port < 1 || port > 65535 {
		return fmt.Errorf("%w: port must be an integer from 1 to 65535", ErrBadRequest)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil // the session is over: nobody is listening
	}
	if _, dup := t.conns[id]; dup {
		return fmt.Errorf("%w: connection %d is already open", ErrBadRequest, id)
	}
	c := &conn{
		t:        t,
		id:       id,
		finished: make(chan struct{}),
		wake:     make(chan struct{}, 1),
		room:     make(chan struct{}, 1),
	}
	if len(t.conns) >= MaxConns {
		go t.send(protocol.Error{Type: protocol.TypeError, ID: id, Code: protocol.CodeConnectFailed,
			Message: fmt.Sprintf("too many connections in this session (at most %d)", MaxConns)}, nil)
		return nil
	}
	t.conns[id] = c
	go c.run(port)
	return nil
}

func (t *Table) get(id uint64) *conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.conns[id]
}

func (t *Table) remove(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.conns[c.id] == c {
		delete(t.conns, c.id)
	}
}

// CloseAll closes every connection of the session, which has ended (so no
// frame about them is sent any more).
func (t *Table) CloseAll() {
	t.mu.Lock()
	t.closed = true
	all := make([]*conn, 0, len(t.conns))
	for _, c := range t.conns {
		all = append(all, c)
	}
	t.mu.Unlock()
	for _, c := range all {
		c.finish("the session ended")
	}
}

// Send queues data for the guest side of connection target, waiting (at
// most StallTimeout) while its queue is full. Data for a connection that
// is not open is dropped: it may have closed while the host was sending.
func (t *Table) Send(target uint64, data []byte) {
	c := t.get(target)
	if c == nil || len(data) == 0 {
		return
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c.mu.Lock()
		if c.over || c.shutdown {
			c.mu.Unlock()
			return
		}
		if c.queued == 0 || c.queued+len(data) <= MaxPending {
			c.pending = append(c.pending, data)
			c.queued += len(data)
			c.mu.Unlock()
			signal(c.wake)
			return
		}
		c.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(StallTimeout)
		}
		select {
		case <-c.room:
			// Progress: the guest side is reading, if slowly.
			if !timer.Stop() {
				<-timer.C
			}
			timer.Reset(StallTimeout)
		case <-c.finished:
			return
		case <-t.done:
			return
		case <-timer.C:
			c.finish(fmt.Sprintf("the guest side took no data for %v", StallTimeout))
			return
		}
	}
}

// Shutdown half-closes connection target towards the guest once the data
// queued before has been written.
func (t *Table) Shutdown(target uint64) {
	c := t.get(target)
	if c == nil {
		return
	}
	c.mu.Lock()
	c.shutdown = true
	c.mu.Unlock()
	signal(c.wake)
}

// Close closes connection target; its tcp_closed follows.
func (t *Table) Close(target uint64) {
	if c := t.get(target); c != nil {
		c.finish("")
	}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// finish ends the connection (the first reason sticks) and wakes whoever
// waits for it; the reader then sends tcp_closed.
func (c *conn) finish(reason string) {
	c.mu.Lock()
	if c.over {
		c.mu.Unlock()
		return
	}
	c.over = true
	c.reason = reason
	c.pending, c.queued = nil, 0
	nc := c.nc
	c.mu.Unlock()
	close(c.finished)
	if nc != nil {
		nc.Close()
	}
}

// run connects, then relays the guest side to the host until the
// connection is over, and sends every frame of it.
func (c *conn) run(port int) {
	defer c.t.remove(c)
	ctx, cancel := context.WithTimeout(context.Background(), ConnectTimeout)
	go func() {
		select {
		case <-c.finished:
		case <-c.t.done:
		case <-ctx.Done():
		}
		cancel()
	}()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	cancel()
	if err != nil {
		c.finish(err.Error())
		c.t.send(protocol.Error{Type: protocol.TypeError, ID: c.id, Code: protocol.CodeConnectFailed, Message: err.Error()}, nil)
		return
	}
	tc := nc.(*net.TCPConn)
	c.mu.Lock()
	over := c.over
	c.nc = tc
	c.mu.Unlock()
	if !c.t.send(protocol.OK{Type: protocol.TypeTCPOpened, ID: c.id}, nil) {
		c.finish("the session ended")
	}
	if over {
		tc.Close() // closed by the host while connecting
	} else {
		go c.writeLoop(tc)
		c.readLoop(tc)
	}
	<-c.finished
	c.mu.Lock()
	reason := c.reason
	c.mu.Unlock()
	c.t.send(protocol.TCPClosed{Type: protocol.TypeTCPClosed, ID: c.id, Error: reason}, nil)
}

func (c *conn) readLoop(tc *net.TCPConn) {
	buf := make([]byte, DataChunk)
	for {
		n, err := tc.Read(buf)
		if n > 0 {
			data := append([]byte(nil), buf[:n]...)
			if !c.t.send(protocol.OK{Type: protocol.TypeTCPData, ID: c.id}, data) {
				c.finish("the session ended")
				return
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			c.t.send(protocol.OK{Type: protocol.TypeTCPEOF, ID: c.id}, nil)
			c.mu.Lock()
			c.rdEOF = true
			both := c.wrDone
			c.mu.Unlock()
			if both {
				c.finish("")
			}
			return
		}
		c.finish("read: " + errText(err))
		return
	}
}

func (c *conn) writeLoop(tc *net.TCPConn) {
	for {
		c.mu.Lock()
		for !c.over && len(c.pending) == 0 && !(c.shutdown && !c.wrDone) {
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-c.finished:
			}
			c.mu.Lock()
		}
		if c.over {
			c.mu.Unlock()
			return
		}
		if len(c.pending) > 0 {
			data := c.pending[0]
			c.mu.Unlock()
			_, err := tc.Write(data)
			c.mu.Lock()
			if len(c.pending) > 0 {
				c.pending[0] = nil
				c.pending = c.pending[1:]
				c.queued -= len(data)
			}
			c.mu.Unlock()
			signal(c.room)
			if err != nil {
				c.finish("write: " + errText(err))
				return
			}
			continue
		}
		// Shut down with nothing left to write.
		c.wrDone = true
		both := c.rdEOF
		c.mu.Unlock()
		if err := tc.CloseWrite(); err != nil {
			c.finish("shutdown: " + errText(err))
			return
		}
		if both {
			c.finish("")
		}
		return
	}
}

// errText is an error without the address pair net errors carry.
func errText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}
