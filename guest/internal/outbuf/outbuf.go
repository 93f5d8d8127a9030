// Package outbuf is the output buffer of shells and services: a ring of
// bounded size that keeps the newest bytes, addressed by absolute offsets
// from the first byte ever written (so a reader can resume where it left
// off and learn what it missed).
package outbuf

import (
	"io"
	"sync"
	"time"
)

// minAlloc is the first allocation: most services print little, so the
// full capacity is only allocated once it is needed.
const minAlloc = 4096

// Buffer is safe for concurrent use.
type Buffer struct {
	mu        sync.Mutex
	capacity  int
	buf       []byte // allocated storage, grows up to capacity
	head      int    // index in buf of the oldest byte held
	n         int    // bytes held
	end       int64  // bytes ever written
	lastWrite time.Time
	changed   chan struct{} // closed by the next write; nil until asked for
}

// New returns an empty buffer keeping at most capacity (> 0) bytes.
func New(capacity int) *Buffer {
	if capacity <= 0 {
		panic("outbuf: capacity must be positive")
	}
	return &Buffer{capacity: capacity, lastWrite: time.Now()}
}

// readChunk is how much ReadFrom asks its source for at a time.
const readChunk = 32 << 10

// ReadFrom appends everything r yields until it fails (io.EOF, or EIO from
// a terminal nothing holds any more, or r being closed). It is how a shell's
// or service's output reaches its buffer; the error that ended it is
// returned, nil for io.EOF.
func (b *Buffer) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, readChunk)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			b.Write(buf[:n])
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Write appends p, dropping the oldest bytes beyond the capacity. It never
// fails and never blocks on readers.
func (b *Buffer) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	total := len(p)
	b.end += int64(total)
	b.lastWrite = time.Now()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
	if len(p) >= b.capacity {
		// Only the newest capacity bytes of p survive.
		p = p[len(p)-b.capacity:]
		if len(b.buf) < b.capacity {
			b.buf = make([]byte, b.capacity)
		}
		copy(b.buf, p)
		b.head, b.n = 0, b.capacity
		return total, nil
	}
	if need := b.n + len(p); need > len(b.buf) && len(b.buf) < b.capacity {
		size := 2 * len(b.buf)
		if size < minAlloc {
			size = minAlloc
		}
		if size < need {
			size = need
		}
		if size > b.capacity {
			size = b.capacity
		}
		grown := make([]byte, size)
		b.copyOut(grown, 0, b.n)
		b.buf, b.head = grown, 0
	}
	if over := b.n + len(p) - len(b.buf); over > 0 {
		// Full: forget the oldest bytes.
		b.head = (b.head + over) % len(b.buf)
		b.n -= over
	}
	tail := (b.head + b.n) % len(b.buf)
	k := copy(b.buf[tail:], p)
	copy(b.buf, p[k:])
	b.n += len(p)
	return total, nil
}

// copyOut copies count held bytes, starting rel bytes after the oldest, to
// dst. b.mu must be held.
func (b *Buffer) copyOut(dst []byte, rel, count int) {
	if count == 0 {
		return
	}
	i := (b.head + rel) % len(b.buf)
	k := copy(dst[:count], b.buf[i:])
	copy(dst[k:count], b.buf)
}

// Stats describes the buffer at one instant.
type Stats struct {
	Start     int64 // offset of the oldest byte held (bytes dropped so far)
	End       int64 // offset after the newest byte (bytes written so far)
	LastWrite time.Time
}

// Stats returns the buffer's offsets and the time of the last write (the
// buffer's creation when nothing was written).
func (b *Buffer) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.statsLocked()
}

func (b *Buffer) statsLocked() Stats {
	return Stats{Start: b.end - int64(b.n), End: b.end, LastWrite: b.lastWrite}
}

// ReadAt returns a copy of at most max bytes starting at offset off: from
// the oldest byte held when off is older, from the end (nothing) when off
// is beyond it. start is where the returned bytes begin.
func (b *Buffer) ReadAt(off int64, max int) (start int64, data []byte, st Stats) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st = b.statsLocked()
	start = off
	if start < st.Start {
		start = st.Start
	}
	if start > st.End {
		start = st.End
	}
	count := st.End - start
	if max < 0 {
		max = 0
	}
	if count > int64(max) {
		count = int64(max)
	}
	data = make([]byte, count)
	b.copyOut(data, int(start-st.Start), int(count))
	return start, data, st
}

// Snapshot returns a copy of everything held.
func (b *Buffer) Snapshot() ([]byte, Stats) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data := make([]byte, b.n)
	b.copyOut(data, 0, b.n)
	return data, b.statsLocked()
}

// Changed returns a channel that is closed by the next write.
func (b *Buffer) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

// TailLines returns the suffix of data holding its last n lines (n ≥ 0).
// A final newline ends the last line rather than starting an empty one; a
// final line without a newline counts as a line.
func TailLines(data []byte, n int) []byte {
	if n <= 0 {
		return data[len(data):]
	}
	i := len(data)
	if i > 0 && data[i-1] == '\n' {
		i--
	}
	for ; i > 0; i-- {
		if data[i-1] == '\n' {
			n--
			if n == 0 {
				return data[i:]
			}
		}
	}
	return data
}
