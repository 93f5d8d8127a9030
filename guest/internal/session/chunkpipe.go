package session

import (
	"io"
	"sync"
)

// chunkPipe carries a put_tar's chunks from the session reader to the
// extraction. Unlike io.Pipe it holds up to limit bytes, so the reader goes
// back to the port (and the host keeps sending) while the extraction writes
// files; past the limit Write blocks, so a slow disk still holds the host
// back instead of piling chunks up in memory. Chunks are kept, not copied:
// each frame's payload is its own allocation.
type chunkPipe struct {
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte
	queued int
	limit  int
	wErr   error // set by CloseWrite: the reader gets it once drained (io.EOF for a clean end)
	rErr   error // set by Abort: reads and writes fail with it
}

func newChunkPipe(limit int) *chunkPipe {
	p := &chunkPipe{limit: limit}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// Write queues b, waiting while limit bytes are queued. It fails once the
// reading side is closed.
func (p *chunkPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.rErr == nil && p.wErr == nil && p.queued > 0 && p.queued+len(b) > p.limit {
		p.cond.Wait()
	}
	if p.rErr != nil {
		return 0, p.rErr
	}
	if p.wErr != nil {
		return 0, io.ErrClosedPipe
	}
	if len(b) > 0 {
		p.chunks = append(p.chunks, b)
		p.queued += len(b)
		p.cond.Broadcast()
	}
	return len(b), nil
}

// Read takes from the oldest chunk, waiting for one; after CloseWrite it
// returns what is queued, then the close's error.
func (p *chunkPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.chunks) == 0 && p.wErr == nil && p.rErr == nil {
		p.cond.Wait()
	}
	if p.rErr != nil {
		return 0, p.rErr
	}
	if len(p.chunks) == 0 {
		return 0, p.wErr
	}
	n := copy(b, p.chunks[0])
	if n == len(p.chunks[0]) {
		p.chunks[0] = nil
		p.chunks = p.chunks[1:]
	} else {
		p.chunks[0] = p.chunks[0][n:]
	}
	p.queued -= n
	p.cond.Broadcast()
	return n, nil
}

// CloseWrite ends the stream: the reader drains what is queued, then gets
// err (io.EOF when nil). Only the first close counts.
func (p *chunkPipe) CloseWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.wErr == nil {
		p.wErr = err
	}
	p.cond.Broadcast()
}

// Abort ends the transfer at once, from either side: queued chunks are
// dropped, and reads and writes fail with err.
func (p *chunkPipe) Abort(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.rErr == nil {
		p.rErr = err
	}
	p.chunks, p.queued = nil, 0
	p.cond.Broadcast()
}
