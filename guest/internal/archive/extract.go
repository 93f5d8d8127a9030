package archive

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

const (
	blockSize = 512
	// readBuffer batches the many small reads of the tar reader (a header
	// is one block) into few reads of the underlying pipe.
	readBuffer = 64 << 10
	copyBuffer = 64 << 10
	// implicitDirMode is the mode of a directory the archive has entries
	// beneath but no entry for.
	implicitDirMode fs.FileMode = 0o755
)

// kind is what an earlier entry left at a path of the staged tree.
type kind uint8

const (
	kindNone kind = iota
	kindDir
	kindFile
	kindSymlink
)

// dirAttrs are applied to staged directories once all their content exists:
// creating entries in a directory would bump its mtime again, and a
// read-only mode would get in the way of filling it.
type dirAttrs struct {
	mode     fs.FileMode
	mtime    time.Time
	explicit bool // an entry of the archive named it (else: only a parent)
}

type extractor struct {
	root     string // the staged tree
	req      Request
	reserved string // a top-level name the archive may not use ("" if none)

	kinds map[string]kind // by cleaned path; the staged tree is ours alone
	dirs  map[string]*dirAttrs
	st    Stats
	count int64 // entries seen
	buf   []byte
}

func newExtractor(root string, req Request) *extractor {
	return &extractor{
		root:  root,
		req:   req,
		kinds: map[string]kind{},
		dirs:  map[string]*dirAttrs{},
		buf:   make([]byte, copyBuffer),
	}
}

// stream sits between the tar reader and the transport. It remembers the
// transport's first error, to tell a broken stream (the session ended) from a
// broken archive, and how the consumed bytes end, to tell the real end of an
// archive from a stream that was cut at an entry boundary: archive/tar
// reports both as io.EOF.
type stream struct {
	r     io.Reader
	n     int64 // bytes consumed by the tar reader
	zeros int64 // length of the run of zero bytes that ends them
	err   error // first error of r, io.EOF included
}

func (s *stream) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	i := n - 1
	for i >= 0 && p[i] == 0 {
		i--
	}
	if i < 0 {
		s.zeros += int64(n)
	} else {
		s.zeros = int64(n - 1 - i)
	}
	if err != nil && s.err == nil {
		s.err = err
	}
	return n, err
}

// broken reports the transport's failure, if it had one.
func (s *stream) broken() error {
	if s.err != nil && s.err != io.EOF {
		return &Error{Kind: Aborted, msg: "reading the archive: " + s.err.Error(), err: s.err}
	}
	return nil
}

// readError classifies an error of the tar reader; name is the entry being
// read ("" between entries).
func (x *extractor) readError(s *stream, name string, err error) error {
	if b := s.broken(); b != nil {
		return b
	}
	msg := "not a valid tar archive: " + err.Error()
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		msg = "archive is truncated"
	}
	if name != "" {
		msg = name + ": " + msg
	}
	return &Error{Kind: BadArchive, msg: msg, err: err}
}

// run extracts the whole stream into the staged tree and applies the
// directories' attributes; the tree is then ready to be merged.
func (x *extractor) run(r io.Reader) (Stats, error) {
	s := &stream{r: bufio.NewReaderSize(r, readBuffer)}
	tr := tar.NewReader(s)
	for {
		before := s.n
		hdr, err := tr.Next()
		if err == io.EOF {
			// A complete archive ends with two zero blocks, which
			// this very call consumed (after at most a block of the
			// previous entry's padding). archive/tar also says EOF
			// when the stream simply stops between entries, which is
			// how a cut-off transfer looks.
			if s.n-before < 2*blockSize || s.zeros < 2*blockSize {
				if b := s.broken(); b != nil {
					return Stats{}, b
				}
				return Stats{}, &Error{Kind: BadArchive, msg: "archive is truncated (no end-of-archive marker)"}
			}
			break
		}
		if err != nil {
			return Stats{}, x.readError(s, "", err)
		}
		if err := x.entry(tr, s, hdr); err != nil {
			return Stats{}, err
		}
		// Consume what an entry left unread (data of a skipped entry)
		// now, so that the next Next call reads headers only; the
		// end-of-archive check above depends on it.
		if _, err := io.CopyBuffer(io.Discard, tr, x.buf); err != nil {
			return Stats{}, x.readError(s, hdr.Name, err)
		}
	}
	if err := x.drain(s); err != nil {
		return Stats{}, err
	}
	if err := x.applyDirAttrs(); err != nil {
		return Stats{}, err
	}
	return x.st, nil
}

// drain reads the stream to its end. Tar writers pad archives with zeros
// (often to a 10 KiB record); anything else there, such as a second archive
// concatenated to the first, would otherwise be silently ignored.
func (x *extractor) drain(s *stream) error {
	for {
		n, err := s.Read(x.buf)
		for _, b := range x.buf[:n] {
			if b != 0 {
				return &Error{Kind: BadArchive, msg: "data after the end-of-archive marker"}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return s.broken()
		}
	}
}

// cleanName applies the name rules; it returns "" for the archive root
// itself ("." or "./"), which is skipped.
func cleanName(raw string) (string, error) {
	switch {
	case strings.IndexByte(raw, 0) >= 0:
		q, _ := json.Marshal(raw)
		return "", refuse(string(q), "name contains a NUL byte")
	case raw == "":
		return "", refuse(`""`, "empty name")
	case strings.HasPrefix(raw, "/"):
		return "", refuse(raw, "absolute paths are not allowed")
	}
	for _, part := range strings.Split(raw, "/") {
		if part == ".." {
			return "", refuse(raw, "path leaves the destination")
		}
	}
	name := path.Clean(raw)
	if name == "." {
		return "", nil
	}
	return name, nil
}

func (x *extractor) entry(tr *tar.Reader, s *stream, hdr *tar.Header) error {
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil // pax metadata for the whole archive (git archive writes one)
	}
	name, err := cleanName(hdr.Name)
	if err != nil || name == "" {
		// The root is dest itself: its mode and times are not the
		// archive's to change.
		return err
	}
	x.count++
	if x.count > x.req.MaxEntries {
		return &Error{Kind: TooLarge, msg: fmt.Sprintf("more than %d entries", x.req.MaxEntries)}
	}
	if x.reserved != "" && strings.SplitN(name, "/", 2)[0] == x.reserved {
		return refuse(name, "the name is reserved for the agent's staging directory")
	}
	// Nothing may be created through a symlink of the archive, nor
	// beneath one of its files.
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		switch parent := name[:i]; x.kinds[parent] {
		case kindSymlink:
			return refuse(name, "written through symlink %s", parent)
		case kindFile:
			return refuse(name, "beneath regular file %s", parent)
		}
	}
	if x.kinds[name] == kindDir && hdr.Typeflag != tar.TypeDir {
		return refuse(name, "replaces a directory of this archive")
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return x.dir(name, hdr)
	case tar.TypeReg, tar.TypeCont: // archive/tar turns the old '\x00' into TypeReg
		return x.file(name, hdr, tr, s)
	case tar.TypeSymlink:
		return x.symlink(name, hdr)
	case tar.TypeLink:
		return x.hardlink(name, hdr)
	case tar.TypeChar, tar.TypeBlock:
		return refuse(name, "device nodes are not allowed (only files, directories and links)")
	case tar.TypeFifo:
		return refuse(name, "FIFOs are not allowed (only files, directories and links)")
	default:
		return refuse(name, "entries of type %q are not allowed (only files, directories and links)", string(hdr.Typeflag))
	}
}

func (x *extractor) full(name string) string { return x.root + "/" + name }

// prepare makes room for a new entry at name: the missing parents become
// directories, and an earlier file or symlink at name is removed (a later
// entry of the same path replaces it).
func (x *extractor) prepare(name string) error {
	for i := 0; i < len(name); i++ {
		if name[i] != '/' || x.kinds[name[:i]] == kindDir {
			continue
		}
		parent := name[:i] // kindNone: the checks in entry exclude the rest
		if err := os.Mkdir(x.full(parent), 0o700); err != nil {
			return ioError(name, err)
		}
		x.kinds[parent] = kindDir
		x.dirs[parent] = &dirAttrs{mode: implicitDirMode}
	}
	switch x.kinds[name] {
	case kindFile, kindSymlink:
		if err := os.Remove(x.full(name)); err != nil {
			return ioError(name, err)
		}
		delete(x.kinds, name)
	}
	return nil
}

func (x *extractor) dir(name string, hdr *tar.Header) error {
	if x.kinds[name] != kindDir {
		if err := x.prepare(name); err != nil {
			return err
		}
		// 0700 until applyDirAttrs: the archive's mode could keep us
		// out (when not root) and would be visible half-filled.
		if err := os.Mkdir(x.full(name), 0o700); err != nil {
			return ioError(name, err)
		}
		x.kinds[name] = kindDir
	}
	// A repeated directory entry just updates the attributes.
	x.dirs[name] = &dirAttrs{mode: perm(hdr.Mode), mtime: hdr.ModTime, explicit: true}
	x.st.Dirs++
	return nil
}

func (x *extractor) file(name string, hdr *tar.Header, tr *tar.Reader, s *stream) error {
	// Checked before a byte is written; st.Bytes never exceeds MaxBytes,
	// so the subtraction cannot overflow.
	if hdr.Size > x.req.MaxBytes-x.st.Bytes {
		return &Error{Kind: TooLarge, msg: fmt.Sprintf("more than %d bytes of file data", x.req.MaxBytes)}
	}
	if err := x.prepare(name); err != nil {
		return err
	}
	full := x.full(name)
	// O_EXCL|O_NOFOLLOW: never write through whatever might be there.
	fd, err := rawCreateExcl(full)
	if err != nil {
		return ioError(name, err)
	}
	x.kinds[name] = kindFile
	var written int64
	for {
		n, rerr := tr.Read(x.buf)
		if n > 0 {
			if werr := writeAll(fd, x.buf[:n]); werr != nil {
				rawClose(fd)
				return ioError(name, werr)
			}
			written += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			rawClose(fd)
			return x.readError(s, name, rerr)
		}
	}
	if written != hdr.Size {
		rawClose(fd)
		return refuse(name, "holds %d bytes of data, its header says %d", written, hdr.Size)
	}
	// Explicitly, and through the descriptor: the create mode is subject
	// to the umask, and setuid/setgid/sticky never come from an archive.
	// The times go through the descriptor too, so nothing else at the path
	// can receive them.
	if err := rawFinish(fd, uint32(perm(hdr.Mode)), hdr.ModTime); err != nil {
		return ioError(name, err)
	}
	x.st.Files++
	x.st.Bytes += hdr.Size
	return nil
}

func (x *extractor) symlink(name string, hdr *tar.Header) error {
	target := hdr.Linkname
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return refuse(name, "symlink has an empty or invalid target")
	}
	if strings.HasPrefix(target, "/") {
		return refuse(name, "symlink target %s leaves the destination", target)
	}
	if r := path.Join(path.Dir(name), target); r == ".." || strings.HasPrefix(r, "../") {
		return refuse(name, "symlink target %s leaves the destination", target)
	}
	if err := x.prepare(name); err != nil {
		return err
	}
	// The link is created with the cleaned target, the one just checked.
	// Written as is, "d/x -> y/../w" passes the lexical check (d/w), but
	// if d/y is a symlink to "..", the kernel resolves y first and the ".."
	// then climbs out of the destination. A clean relative target only has
	// ".." at its start, climbing real directories from the link's own.
	if err := os.Symlink(path.Clean(target), x.full(name)); err != nil {
		return ioError(name, err)
	}
	x.kinds[name] = kindSymlink
	x.st.Symlinks++
	return nil
}

func (x *extractor) hardlink(name string, hdr *tar.Header) error {
	raw := hdr.Linkname
	target, err := cleanName(raw)
	if err != nil || target == "" || x.kinds[target] != kindFile {
		// Anything but a regular file this archive made could link
		// the tree to a file of the guest (say /etc/shadow), or to a
		// symlink.
		return refuse(name, "hardlink target %s is not a file of this archive", raw)
	}
	if target != name { // a link to itself changes nothing
		if err := x.prepare(name); err != nil {
			return err
		}
		// link(2) does not follow a symlink at the old path, and
		// target is a regular file anyway.
		if err := os.Link(x.full(target), x.full(name)); err != nil {
			return ioError(name, err)
		}
		x.kinds[name] = kindFile
	}
	x.st.Files++
	return nil
}

// applyDirAttrs sets the staged directories' modes and (for those the
// archive has entries for) times, children before parents: a parent's mode
// may deny access to its children when not running as root.
func (x *extractor) applyDirAttrs() error {
	names := make([]string, 0, len(x.dirs))
	for name := range x.dirs {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	for _, name := range names {
		a := x.dirs[name]
		full := x.full(name)
		if a.explicit {
			if err := os.Chtimes(full, a.mtime, a.mtime); err != nil {
				return ioError(name, err)
			}
		}
		if err := os.Chmod(full, a.mode); err != nil {
			return ioError(name, err)
		}
	}
	return nil
}

// perm keeps the permission bits of a tar mode.
func perm(mode int64) fs.FileMode { return fs.FileMode(mode & 0o777) }
