package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"runtime/debug"
	"syscall"

	"pyro/guest/internal/protocol"
	"pyro/guest/internal/wsfs"
)

const (
	// maxListEntries and maxReadBytes bound what one request may ask for.
	maxListEntries = 100_000
	maxReadBytes   = protocol.MaxPayloadLen
	// entriesChunk is how much JSON one fs_entries frame carries at most.
	entriesChunk = 256 * 1024
	// tarChunk is the payload size of tar_data frames.
	tarChunk = 256 * 1024
	// hashMaxBytes bounds the file data one hashed listing reads by default.
	hashMaxBytes = 1 << 30
)

// fsCode maps a wsfs failure to a protocol code.
func fsCode(err error) string {
	switch {
	case errors.Is(err, wsfs.ErrOutside):
		return protocol.CodeOutside
	case errors.Is(err, wsfs.ErrNotFound):
		return protocol.CodeNotFound
	case errors.Is(err, wsfs.ErrBadPath):
		return protocol.CodeBadRequest
	case errors.Is(err, wsfs.ErrTooLarge):
		return protocol.CodeTooLarge
	case errors.Is(err, wsfs.ErrNotFile), errors.Is(err, wsfs.ErrIsDir), errors.Is(err, wsfs.ErrSymlink), errors.Is(err, wsfs.ErrNotDir):
		return protocol.CodeWrongType
	}
	return protocol.CodeIOError
}

// parseFs decodes a filesystem request and opens its root.
func parseFs(typ string, header []byte) (protocol.FsRequest, *wsfs.Root, error) {
	var req protocol.FsRequest
	if err := json.Unmarshal(header, &req); err != nil {
		return req, nil, fmt.Errorf("%s: %v", typ, err)
	}
	if req.Root == nil || !path.IsAbs(*req.Root) || path.Clean(*req.Root) != *req.Root {
		return req, nil, fmt.Errorf("%s: root must be an absolute, clean path", typ)
	}
	if typ != protocol.TypeFsRemove && req.Path == nil {
		return req, nil, fmt.Errorf("%s: path is required", typ)
	}
	root, err := wsfs.OpenRoot(*req.Root)
	if err != nil {
		return req, nil, err
	}
	return req, root, nil
}

func positive(v *int64, max int64) (int64, bool) {
	if v == nil || *v <= 0 || *v > max {
		return 0, false
	}
	return *v, true
}

// fsRequest runs one filesystem request on its own goroutine: a long walk
// or export must not hold up the session's other requests.
func (c *Conn) fsRequest(s *session, id uint64, typ string, f protocol.Frame) {
	req, root, err := parseFs(typ, f.Header)
	if err != nil {
		code := protocol.CodeBadRequest
		if isWsfs(err) {
			code = fsCode(err)
		}
		c.sendError(s, id, code, err.Error())
		return
	}
	payload := f.Payload
	go func() {
		defer root.Close()
		defer func() {
			if p := recover(); p != nil {
				c.opts.Logf("session: panic in %s %d: %v\n%s", typ, id, p, debug.Stack())
				c.sendError(s, id, protocol.CodeIOError, fmt.Sprintf("%s: internal error", typ))
			}
		}()
		var err error
		switch typ {
		case protocol.TypeFsList:
			err = c.fsList(s, id, root, req)
		case protocol.TypeFsRead:
			err = c.fsRead(s, id, root, req)
		case protocol.TypeFsWrite:
			err = c.fsWrite(s, id, root, req, payload)
		case protocol.TypeFsRemove:
			err = c.fsRemove(s, id, root, req)
		case protocol.TypeGetTar:
			err = c.getTar(s, id, root, req)
		}
		if err != nil {
			code := fsCode(err)
			if errors.Is(err, errBadFs) {
				code = protocol.CodeBadRequest
			}
			c.sendError(s, id, code, err.Error())
		}
	}()
}

var errBadFs = errors.New("bad request")

func isWsfs(err error) bool {
	var we *wsfs.Error
	return errors.As(err, &we)
}

func badFs(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadFs, fmt.Sprintf(format, args...))
}

func (c *Conn) fsList(s *session, id uint64, root *wsfs.Root, req protocol.FsRequest) error {
	max, ok := positive(req.MaxEntries, maxListEntries)
	if !ok {
		return badFs("fs_list: max_entries must be between 1 and %d", maxListEntries)
	}
	hashMax := int64(hashMaxBytes)
	if req.HashMaxBytes != nil {
		if hashMax, ok = positive(req.HashMaxBytes, 1<<40); !ok {
			return badFs("fs_list: hash_max_bytes must be a positive integer")
		}
	}
	var batch []wsfs.Entry
	size := 0
	count := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		data, err := json.Marshal(batch)
		if err != nil {
			return err
		}
		batch, size = batch[:0], 0
		if !c.sendFlushed(s, protocol.OK{Type: protocol.TypeFsEntries, ID: id}, data, nil) {
			return errSessionEnded
		}
		return nil
	}
	truncated, err := root.Walk(*req.Path, wsfs.WalkOptions{Recursive: req.Recursive, MaxEntries: int(max), Hash: req.Hash, HashMaxBytes: hashMax}, func(e wsfs.Entry) error {
		count++
		batch = append(batch, e)
		size += len(e.Path) + len(e.Target) + 160
		if size >= entriesChunk {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	c.send(s, protocol.FsListOK{Type: protocol.TypeOK, ID: id, Count: count, Truncated: truncated}, nil)
	return nil
}

func (c *Conn) fsRead(s *session, id uint64, root *wsfs.Root, req protocol.FsRequest) error {
	max, ok := positive(req.MaxBytes, maxReadBytes)
	if !ok {
		return badFs("fs_read: max_bytes must be between 1 and %d", maxReadBytes)
	}
	res, err := root.Read(*req.Path, max)
	if err != nil {
		return err
	}
	c.send(s, protocol.FsReadOK{Type: protocol.TypeOK, ID: id, Size: res.Size, Mode: res.Mode, MtimeMs: res.MtimeMs, Truncated: res.Truncated}, res.Data)
	return nil
}

func (c *Conn) fsWrite(s *session, id uint64, root *wsfs.Root, req protocol.FsRequest, data []byte) error {
	if req.Mode != nil && *req.Mode > 0o777 {
		return badFs("fs_write: mode must be permission bits (at most 0777)")
	}
	existed, err := root.Write(*req.Path, data, req.Mode)
	if err != nil {
		return err
	}
	c.send(s, protocol.FsWriteOK{Type: protocol.TypeOK, ID: id, Existed: existed}, nil)
	return nil
}

func (c *Conn) fsRemove(s *session, id uint64, root *wsfs.Root, req protocol.FsRequest) error {
	if len(req.Paths) == 0 || len(req.Paths) > maxListEntries {
		return badFs("fs_remove: paths must list 1 to %d paths", maxListEntries)
	}
	for _, p := range req.Paths {
		if err := root.Remove(p); err != nil {
			return err
		}
	}
	c.send(s, protocol.OK{Type: protocol.TypeOK, ID: id}, nil)
	return nil
}

// chunkWriter sends what the tar writer produces as tar_data frames.
type chunkWriter struct {
	c   *Conn
	s   *session
	id  uint64
	buf []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		room := tarChunk - len(w.buf)
		if room > len(p) {
			room = len(p)
		}
		w.buf = append(w.buf, p[:room]...)
		p = p[room:]
		if len(w.buf) == tarChunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	data := append([]byte(nil), w.buf...)
	w.buf = w.buf[:0]
	if !w.c.sendFlushed(w.s, protocol.OK{Type: protocol.TypeTarData, ID: w.id}, data, nil) {
		return errSessionEnded
	}
	return nil
}

func (c *Conn) getTar(s *session, id uint64, root *wsfs.Root, req protocol.FsRequest) error {
	defer beginBulk()()
	maxBytes, ok := positive(req.MaxBytes, 1<<40)
	if !ok {
		return badFs("get_tar: max_bytes must be a positive integer")
	}
	maxEntries, ok := positive(req.MaxEntries, 1<<30)
	if !ok {
		return badFs("get_tar: max_entries must be a positive integer")
	}
	w := &chunkWriter{c: c, s: s, id: id, buf: make([]byte, 0, tarChunk)}
	st, err := root.Tar(*req.Path, w, wsfs.TarLimits{MaxBytes: maxBytes, MaxEntries: maxEntries})
	if err == nil {
		err = w.flush()
	}
	if err != nil {
		return err
	}
	c.send(s, protocol.GetTarOK{Type: protocol.TypeOK, ID: id, Files: st.Files, Dirs: st.Dirs, Symlinks: st.Symlinks, Bytes: st.Bytes, Skipped: st.Skipped}, nil)
	return nil
}

// syncAll flushes every filesystem, so what was written survives the VM
// being killed.
func syncAll() { syscall.Sync() }
