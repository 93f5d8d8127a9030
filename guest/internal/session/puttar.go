package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"

	"pyro/guest/internal/archive"
	"pyro/guest/internal/protocol"
)

// putTar is one put_tar transfer. The session reader feeds the archive's
// chunks into the pipe; a goroutine extracts from its other end and sends
// the one reply. The pipe holds up to putTarQueue bytes: the reader takes
// the next frames from the port while files are written, and a slow disk
// still holds the reader back (and with it the host) past that.
//
// The flags are guarded by the session's mu.
type putTar struct {
	pw       *chunkPipe // nil when the request itself was refused
	ended    bool       // put_tar_end received: no more data
	finished bool       // the extraction is over; later data is dropped
}

// putTarQueue is how many bytes of a transfer may wait for the extraction.
const putTarQueue = 4 << 20

var (
	// errSessionEnded aborts the transfers of a session that ended; the
	// extraction then removes its staging directory and dest stays as it
	// was.
	errSessionEnded = errors.New("the session ended before put_tar_end")
	// errPutTarOver is what feeding a transfer returns once its
	// extraction has stopped reading.
	errPutTarOver = errors.New("put_tar is over")
)

// parsePutTar validates a put_tar request; the filesystem side of dest is
// checked by the extraction.
func parsePutTar(header []byte) (archive.Request, error) {
	var req protocol.PutTar
	if err := json.Unmarshal(header, &req); err != nil {
		return archive.Request{}, fmt.Errorf("put_tar: %v", err)
	}
	if req.Dest == nil {
		return archive.Request{}, errors.New("put_tar: dest is required")
	}
	if err := archive.CheckDest(*req.Dest); err != nil {
		return archive.Request{}, fmt.Errorf("put_tar: %v", err)
	}
	if req.MaxBytes == nil || *req.MaxBytes <= 0 {
		return archive.Request{}, errors.New("put_tar: max_bytes must be a positive integer")
	}
	if req.MaxEntries == nil || *req.MaxEntries <= 0 {
		return archive.Request{}, errors.New("put_tar: max_entries must be a positive integer")
	}
	return archive.Request{Dest: *req.Dest, MaxBytes: *req.MaxBytes, MaxEntries: *req.MaxEntries}, nil
}

func (c *Conn) putTarStart(s *session, id uint64, f protocol.Frame) {
	// Only this (reader) goroutine adds transfers, so the check and the
	// insertion below need not be one critical section.
	s.mu.Lock()
	cur := s.puts[id]
	busy := cur != nil && !cur.finished
	s.mu.Unlock()
	if busy {
		c.sendError(s, id, protocol.CodeBadRequest, fmt.Sprintf("put_tar: id %d is already in progress", id))
		return
	}
	req, err := parsePutTar(f.Header)
	if err != nil {
		// Remembered as finished, so that the data frames the host has
		// already sent behind the request are dropped, not each
		// answered with an error.
		s.mu.Lock()
		s.puts[id] = &putTar{finished: true}
		s.mu.Unlock()
		c.sendError(s, id, protocol.CodeBadRequest, err.Error())
		return
	}
	req.Logf = c.opts.Logf
	pipe := newChunkPipe(putTarQueue)
	t := &putTar{pw: pipe}
	s.mu.Lock()
	if s.over {
		// Conn.Close ended the session meanwhile: nobody would abort
		// this transfer, and nobody would read its reply.
		s.mu.Unlock()
		return
	}
	s.puts[id] = t
	s.mu.Unlock()
	go c.runPutTar(s, id, t, pipe, req)
	feed(t, f.Payload)
}

func (c *Conn) putTarData(s *session, id uint64, payload []byte) {
	s.mu.Lock()
	t := s.puts[id]
	var ended, finished bool
	if t != nil {
		ended, finished = t.ended, t.finished
	}
	s.mu.Unlock()
	switch {
	case t == nil:
		c.sendError(s, id, protocol.CodeBadRequest, fmt.Sprintf("put_tar_data: no put_tar in progress with id %d", id))
	case finished:
		// It failed and has replied; the host may not know yet.
	case ended:
		c.sendError(s, id, protocol.CodeBadRequest, fmt.Sprintf("put_tar_data: put_tar %d has already ended", id))
	default:
		feed(t, payload)
	}
}

func (c *Conn) putTarEnd(s *session, id uint64) {
	s.mu.Lock()
	t := s.puts[id]
	switch {
	case t == nil:
		s.mu.Unlock()
		c.sendError(s, id, protocol.CodeBadRequest, fmt.Sprintf("put_tar_end: no put_tar in progress with id %d", id))
	case t.finished:
		// It failed and has replied: this end closes the matter.
		delete(s.puts, id)
		s.mu.Unlock()
	case t.ended:
		s.mu.Unlock()
		c.sendError(s, id, protocol.CodeBadRequest, fmt.Sprintf("put_tar_end: put_tar %d has already ended", id))
	default:
		t.ended = true
		s.mu.Unlock()
		// The extraction reads EOF only now, and only then commits.
		t.pw.CloseWrite(nil)
	}
}

// feed hands a chunk to the extraction, blocking until it has been read.
// An error means the extraction has stopped reading (it failed, or the
// session ended); it replies (or not) by itself, so the chunk is dropped.
func feed(t *putTar, chunk []byte) {
	if len(chunk) > 0 {
		_, _ = t.pw.Write(chunk)
	}
}

func (c *Conn) runPutTar(s *session, id uint64, t *putTar, pr *chunkPipe, req archive.Request) {
	var st archive.Stats
	err := errors.New("internal error")
	defer func() {
		if p := recover(); p != nil {
			c.opts.Logf("session: panic in put_tar %d: %v\n%s", id, p, debug.Stack())
			err = fmt.Errorf("internal error: %v", p)
		}
		// Unblock the reader if it is still feeding us.
		pr.Abort(errPutTarOver)
		s.mu.Lock()
		t.finished = true
		if t.ended && s.puts[id] == t {
			// Gone before the reply, so that the host may reuse the
			// id as soon as it has the reply.
			delete(s.puts, id)
		}
		s.mu.Unlock()
		if err != nil {
			c.sendError(s, id, putTarCode(err), err.Error())
			return
		}
		c.send(s, protocol.PutTarOK{Type: protocol.TypeOK, ID: id, Files: st.Files, Dirs: st.Dirs, Symlinks: st.Symlinks, Bytes: st.Bytes}, nil)
	}()
	defer beginBulk()()
	st, err = archive.Put(pr, req)
	if err == nil {
		// Acknowledged means durable: the tree survives the VM being killed.
		syncAll()
	}
}

// putTarCode is the one place where extraction failures become protocol
// codes. An aborted transfer belongs to an ended session, whose replies
// are never written; io_error is as good as any.
func putTarCode(err error) string {
	var ae *archive.Error
	if errors.As(err, &ae) {
		switch ae.Kind {
		case archive.BadArchive:
			return protocol.CodeBadArchive
		case archive.TooLarge:
			return protocol.CodeTooLarge
		case archive.BadRequest:
			return protocol.CodeBadRequest
		}
	}
	return protocol.CodeIOError
}

// abortPuts ends the transfers of a session that is over. One that already
// received put_tar_end is not affected: the host sent all of it, and it
// completes like an exec that outlives its session.
func (s *session) abortPuts() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.over = true
	for _, t := range s.puts {
		if t.pw != nil {
			t.pw.Abort(errSessionEnded)
		}
	}
}
