// Package wsfs reads and changes files under one root directory (the
// workspace) for the host, without a shell. Every path is resolved by the
// kernel beneath the root (openat2 with RESOLVE_BENEATH): a symlink that
// stays inside the root is followed, one that leads out (or a "..") is
// refused with ErrOutside. Walks never follow symlinks and never descend
// into another filesystem mounted below the root.
package wsfs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"syscall"
	"unsafe"
)

// Kinds of failure, for the protocol's error codes.
var (
	ErrOutside  = errors.New("the path leads outside the workspace")
	ErrNotFound = errors.New("no such file or directory")
	ErrTooLarge = errors.New("too large")
	ErrBadPath  = errors.New("bad path")
	ErrNotFile  = errors.New("not a regular file")
	ErrIsDir    = errors.New("is a directory")
	ErrSymlink  = errors.New("is a symbolic link")
	ErrNotDir   = errors.New("not a directory")
)

// Error wraps one of the kinds above with the path and detail.
type Error struct {
	Kind error
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("%s: %s", e.Path, e.Msg)
	}
	return fmt.Sprintf("%s: %v", e.Path, e.Kind)
}

func (e *Error) Unwrap() error { return e.Kind }

func fail(kind error, p string, msg string) error { return &Error{Kind: kind, Path: p, Msg: msg} }

// sysOpenat2 is openat2(2), the same number on every architecture.
const sysOpenat2 = 437

const (
	resolveNoXdev       = 0x01
	resolveNoMagiclinks = 0x02
	resolveBeneath      = 0x08
)

// oPath is O_PATH (the syscall package does not define it everywhere).
const oPath = 0x200000

type openHow struct {
	Flags   uint64
	Mode    uint64
	Resolve uint64
}

// CleanRel checks a path relative to the root: "." or a clean relative
// path without ".." components, NUL bytes or a leading "/".
func CleanRel(p string) (string, error) {
	if p == "" || p == "." {
		return ".", nil
	}
	if strings.ContainsRune(p, 0) || strings.HasPrefix(p, "/") {
		return "", fail(ErrBadPath, p, "must be relative to the workspace, without NUL bytes")
	}
	if path.Clean(p) != p {
		return "", fail(ErrBadPath, p, "must be a clean path (no //, ./ or trailing /)")
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", fail(ErrOutside, p, "'..' is not allowed")
		}
	}
	return p, nil
}

// Root is an open directory that paths are resolved beneath.
type Root struct {
	fd  int
	dev uint64
}

// OpenRoot opens dir, which must be a directory reached without symlinks.
func OpenRoot(dir string) (*Root, error) {
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return nil, fail(ErrNotFound, dir, "the workspace directory does not exist")
		}
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	return &Root{fd: fd, dev: st.Dev}, nil
}

// Close releases the root.
func (r *Root) Close() { syscall.Close(r.fd) }

// openBeneath opens rel beneath the root, following symlinks only while
// they stay inside it.
func (r *Root) openBeneath(rel string, flags int) (int, error) {
	return openat2(r.fd, rel, flags)
}

func openat2(dirfd int, rel string, flags int) (int, error) {
	p, err := syscall.BytePtrFromString(rel)
	if err != nil {
		return -1, fail(ErrBadPath, rel, "contains a NUL byte")
	}
	how := openHow{Flags: uint64(flags | syscall.O_CLOEXEC), Resolve: resolveBeneath | resolveNoMagiclinks}
	for {
		fd, _, e := syscall.Syscall6(sysOpenat2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
		if e == syscall.EINTR || e == syscall.EAGAIN {
			continue
		}
		if e != 0 {
			return -1, mapErr(rel, e)
		}
		return int(fd), nil
	}
}

func mapErr(rel string, e error) error {
	switch {
	case errors.Is(e, syscall.EXDEV):
		return fail(ErrOutside, rel, "a symbolic link on the way leads outside the workspace")
	case errors.Is(e, syscall.ENOENT):
		return fail(ErrNotFound, rel, "")
	case errors.Is(e, syscall.ENOTDIR):
		return fail(ErrNotDir, rel, "a component of the path is not a directory")
	case errors.Is(e, syscall.ELOOP):
		return fail(ErrSymlink, rel, "too many symbolic links, or a symbolic link where none may be")
	case errors.Is(e, syscall.EISDIR):
		return fail(ErrIsDir, rel, "")
	}
	return fmt.Errorf("%s: %w", rel, e)
}

// Entry describes one file.
type Entry struct {
	Path    string `json:"path"`
	Type    string `json:"type"` // file, dir, symlink, other
	Size    int64  `json:"size"`
	Mode    uint32 `json:"mode"` // permission bits
	MtimeMs int64  `json:"mtime_ms"`
	Target  string `json:"target,omitempty"`
	SHA256  string `json:"sha256,omitempty"`
}

func typeOf(mode uint32) string {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		return "file"
	case syscall.S_IFDIR:
		return "dir"
	case syscall.S_IFLNK:
		return "symlink"
	}
	return "other"
}

func entryOf(p string, st *syscall.Stat_t) Entry {
	return Entry{
		Path:    p,
		Type:    typeOf(st.Mode),
		Size:    st.Size,
		Mode:    st.Mode & 0o7777,
		MtimeMs: st.Mtim.Sec*1000 + st.Mtim.Nsec/1_000_000,
	}
}

// lstatAt stats name in dirfd without following a final symlink.
func lstatAt(dirfd int, name string) (syscall.Stat_t, int, error) {
	var st syscall.Stat_t
	fd, err := syscall.Openat(dirfd, name, oPath|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	if err != nil {
		return st, -1, err
	}
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return st, -1, err
	}
	return st, fd, nil
}

func readlinkAt(dirfd int, name string) (string, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return "", err
	}
	buf := make([]byte, 4096)
	n, _, e := syscall.Syscall6(syscall.SYS_READLINKAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
	if e != 0 {
		return "", e
	}
	return string(buf[:n]), nil
}

func readNames(dirfd int) ([]string, error) {
	dup, err := syscall.Dup(dirfd)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), "dir")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	return names, nil
}

// WalkOptions bound a walk.
type WalkOptions struct {
	Recursive  bool
	MaxEntries int
	// Hash adds the SHA-256 of regular files, reading at most HashMaxBytes in all.
	Hash         bool
	HashMaxBytes int64
}

// Walk lists rel (a directory's entries, or the file itself) in path
// order, calling emit for each. It stops after MaxEntries and then
// reports truncated.
func (r *Root) Walk(rel string, opts WalkOptions, emit func(Entry) error) (truncated bool, err error) {
	rel, err = CleanRel(rel)
	if err != nil {
		return false, err
	}
	fd, err := r.openBeneath(rel, oPath)
	if err != nil {
		return false, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return false, err
	}
	count := 0
	hashed := int64(0)
	w := &walker{r: r, opts: opts, emit: emit, count: &count, hashed: &hashed}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		defer syscall.Close(fd)
		e := entryOf(rel, &st)
		if opts.Hash && e.Type == "file" {
			rfd, err := r.openBeneath(rel, syscall.O_RDONLY|syscall.O_NONBLOCK)
			if err != nil {
				return false, err
			}
			f := os.NewFile(uintptr(rfd), rel)
			e.SHA256, err = w.hash(f, e.Size)
			f.Close()
			if err != nil {
				return false, fmt.Errorf("%s: %w", rel, err)
			}
		}
		return false, emit(e)
	}
	syscall.Close(fd)
	dirfd, err := r.openBeneath(rel, syscall.O_RDONLY|syscall.O_DIRECTORY)
	if err != nil {
		return false, err
	}
	defer syscall.Close(dirfd)
	prefix := ""
	if rel != "." {
		prefix = rel + "/"
	}
	err = w.dir(dirfd, prefix, st.Dev)
	if errors.Is(err, errFull) {
		return true, nil
	}
	return false, err
}

var errFull = errors.New("entry limit reached")

type walker struct {
	r      *Root
	opts   WalkOptions
	emit   func(Entry) error
	count  *int
	hashed *int64
}

// hash digests the open regular file f, counting against HashMaxBytes.
func (w *walker) hash(f *os.File, size int64) (string, error) {
	if *w.hashed+size > w.opts.HashMaxBytes {
		return "", fail(ErrTooLarge, f.Name(), fmt.Sprintf("hashing more than %d bytes of files in one listing", w.opts.HashMaxBytes))
	}
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, w.opts.HashMaxBytes-*w.hashed))
	*w.hashed += n
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// openFileAt opens the regular file name in dirfd for reading, without
// following a symlink or blocking on a FIFO swapped in, and checks that it
// is the file st describes.
func openFileAt(dirfd int, name string, st *syscall.Stat_t) (*os.File, error) {
	fd, err := syscall.Openat(dirfd, name, syscall.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var now syscall.Stat_t
	if err := syscall.Fstat(fd, &now); err != nil || now.Ino != st.Ino || now.Dev != st.Dev {
		syscall.Close(fd)
		return nil, fmt.Errorf("changed while being read")
	}
	return os.NewFile(uintptr(fd), name), nil
}

func (w *walker) dir(dirfd int, prefix string, dev uint64) error {
	names, err := readNames(dirfd)
	if err != nil {
		return fmt.Errorf("%s: %w", strings.TrimSuffix(prefix, "/"), err)
	}
	for _, name := range names {
		if *w.count >= w.opts.MaxEntries {
			return errFull
		}
		st, fd, err := lstatAt(dirfd, name)
		if err != nil {
			if errors.Is(err, syscall.ENOENT) {
				continue // removed meanwhile
			}
			return fmt.Errorf("%s%s: %w", prefix, name, err)
		}
		e := entryOf(prefix+name, &st)
		switch e.Type {
		case "symlink":
			e.Target, _ = readlinkAt(dirfd, name)
		case "file":
			if w.opts.Hash {
				f, err := openFileAt(dirfd, name, &st)
				if err == nil {
					e.SHA256, err = w.hash(f, e.Size)
					f.Close()
				}
				if err != nil {
					syscall.Close(fd)
					return fmt.Errorf("%s%s: %w", prefix, name, err)
				}
			}
		}
		syscall.Close(fd)
		*w.count++
		if err := w.emit(e); err != nil {
			return err
		}
		if e.Type == "dir" && w.opts.Recursive && st.Dev == dev {
			sub, err := syscall.Openat(dirfd, name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
			if err != nil {
				if errors.Is(err, syscall.ENOENT) {
					continue
				}
				return fmt.Errorf("%s%s: %w", prefix, name, err)
			}
			err = w.dir(sub, prefix+name+"/", dev)
			syscall.Close(sub)
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// ReadResult is a file's content, up to a limit.
type ReadResult struct {
	Data      []byte
	Size      int64
	Mode      uint32
	MtimeMs   int64
	Truncated bool
}

// Read returns up to maxBytes of the regular file rel (symlinks inside the
// root are followed).
func (r *Root) Read(rel string, maxBytes int64) (ReadResult, error) {
	rel, err := CleanRel(rel)
	if err != nil {
		return ReadResult{}, err
	}
	fd, err := r.openBeneath(rel, syscall.O_RDONLY|syscall.O_NONBLOCK)
	if err != nil {
		return ReadResult{}, err
	}
	f := os.NewFile(uintptr(fd), rel)
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return ReadResult{}, err
	}
	switch st.Mode & syscall.S_IFMT {
	case syscall.S_IFREG:
	case syscall.S_IFDIR:
		return ReadResult{}, fail(ErrIsDir, rel, "is a directory; list it instead")
	default:
		return ReadResult{}, fail(ErrNotFile, rel, "is not a regular file")
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return ReadResult{}, fmt.Errorf("%s: %w", rel, err)
	}
	res := ReadResult{Size: st.Size, Mode: st.Mode & 0o7777, MtimeMs: st.Mtim.Sec*1000 + st.Mtim.Nsec/1_000_000}
	if int64(len(data)) > maxBytes {
		data = data[:maxBytes]
		res.Truncated = true
	}
	res.Data = data
	return res, nil
}

// parentOf opens the directory that holds rel, creating missing parents
// (mode 0755) when create is set. It returns the directory and the last
// component.
func (r *Root) parentOf(rel string, create bool) (int, string, error) {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	fd, err := r.openBeneath(dir, syscall.O_RDONLY|syscall.O_DIRECTORY)
	if err == nil || !create || !errors.Is(err, ErrNotFound) {
		return fd, base, err
	}
	// Make the missing directories one at a time, each beneath the last.
	cur, err := syscall.Dup(r.fd)
	if err != nil {
		return -1, "", err
	}
	done := ""
	for _, part := range strings.Split(dir, "/") {
		done = path.Join(done, part)
		if err := syscall.Mkdirat(cur, part, 0o755); err != nil && !errors.Is(err, syscall.EEXIST) {
			syscall.Close(cur)
			return -1, "", fmt.Errorf("%s: %w", done, err)
		}
		next, err := openat2(cur, part, syscall.O_RDONLY|syscall.O_DIRECTORY)
		syscall.Close(cur)
		if err != nil {
			if errors.Is(err, ErrNotDir) {
				return -1, "", fail(ErrNotDir, done, "is not a directory")
			}
			return -1, "", err
		}
		cur = next
	}
	return cur, base, nil
}

// Write replaces (or creates) the regular file rel with data, atomically:
// the data goes to a new file beside it, is synced, and is renamed over
// it. An existing file keeps its permission bits unless mode is given; a
// new one gets mode, or 0644. Missing parent directories are created. A
// symlink or a directory at rel is refused.
func (r *Root) Write(rel string, data []byte, mode *uint32) (existed bool, err error) {
	rel, err = CleanRel(rel)
	if err != nil {
		return false, err
	}
	if rel == "." {
		return false, fail(ErrIsDir, rel, "is the workspace itself")
	}
	dirfd, base, err := r.parentOf(rel, true)
	if err != nil {
		return false, err
	}
	defer syscall.Close(dirfd)
	perm := uint32(0o644)
	st, fd, err := lstatAt(dirfd, base)
	switch {
	case err == nil:
		syscall.Close(fd)
		switch typeOf(st.Mode) {
		case "file":
			existed = true
			perm = st.Mode & 0o777
		case "dir":
			return false, fail(ErrIsDir, rel, "is a directory")
		case "symlink":
			return false, fail(ErrSymlink, rel, "is a symbolic link; write to the file it points to instead")
		default:
			return false, fail(ErrNotFile, rel, "is not a regular file")
		}
	case errors.Is(err, syscall.ENOENT):
	default:
		return false, fmt.Errorf("%s: %w", rel, err)
	}
	if mode != nil {
		perm = *mode & 0o777
	}
	tmp := fmt.Sprintf(".pyro-write-%d-%s", os.Getpid(), randomSuffix())
	tfd, err := syscall.Openat(dirfd, tmp, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, perm)
	if err != nil {
		return false, fmt.Errorf("%s: %w", rel, err)
	}
	f := os.NewFile(uintptr(tfd), tmp)
	committed := false
	defer func() {
		if !committed {
			_ = syscall.Unlinkat(dirfd, tmp)
		}
	}()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(os.FileMode(perm)) // the umask may have taken bits away
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("%s: %w", rel, err)
	}
	if err := syscall.Renameat(dirfd, tmp, dirfd, base); err != nil {
		return false, fmt.Errorf("%s: %w", rel, err)
	}
	committed = true
	if err := syscall.Fsync(dirfd); err != nil {
		return existed, fmt.Errorf("%s: %w", rel, err)
	}
	return existed, nil
}

// Remove deletes the file or symlink rel (never a directory, never
// following a final symlink).
func (r *Root) Remove(rel string) error {
	rel, err := CleanRel(rel)
	if err != nil {
		return err
	}
	if rel == "." {
		return fail(ErrIsDir, rel, "is the workspace itself")
	}
	dirfd, base, err := r.parentOf(rel, false)
	if err != nil {
		return err
	}
	defer syscall.Close(dirfd)
	st, fd, err := lstatAt(dirfd, base)
	if err != nil {
		return mapErr(rel, err)
	}
	syscall.Close(fd)
	if typeOf(st.Mode) == "dir" {
		return fail(ErrIsDir, rel, "is a directory")
	}
	if err := syscall.Unlinkat(dirfd, base); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return syscall.Fsync(dirfd)
}

func randomSuffix() string {
	var b [8]byte
	f, err := os.Open("/dev/urandom")
	if err == nil {
		_, _ = io.ReadFull(f, b[:])
		f.Close()
	}
	return hex.EncodeToString(b[:])
}

func fileOf(fd int, name string) *os.File { return os.NewFile(uintptr(fd), name) }
