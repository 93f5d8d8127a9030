// Package archive puts a tar stream into a directory of the guest (put_tar in
// PROTOCOL.md).
//
// The archive is extracted into a private staging directory on the
// destination's filesystem, checked entry by entry as it arrives; only when
// the whole stream has been read cleanly is the staged tree merged into the
// destination, with renames. Any refusal or failure before that point just
// removes the staging directory, so the destination is never seen half
// written.
//
// The host is trusted, but the archive describes a tree of user files that may
// contain anything: the rules here keep every write inside the destination
// whatever the archive says, and never follow a symlink, neither one the
// archive made nor one already in the destination. Commands in the VM run as
// root and could rearrange the destination while we work anyway, so the code
// does not try to be safe against such concurrent changes; it is safe against
// the archive's content and the destination's existing state.
package archive

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
)

// StagingPrefix starts the name of every staging directory.
const StagingPrefix = ".pyro-staging-"

// Kind classifies a failure; the session turns it into a protocol code.
type Kind int

// The failure kinds.
const (
	BadArchive Kind = iota + 1 // an entry, or the stream itself, breaks a rule
	TooLarge                   // more entries or file bytes than allowed
	BadRequest                 // unusable dest or limits
	IOError                    // the filesystem failed (disk full, ...)
	Aborted                    // the stream broke off (the session ended)
)

// Error is the error type of Put. Its message is meant for the host's user:
// for BadArchive it starts with the offending entry's name.
type Error struct {
	Kind Kind
	msg  string
	err  error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// refuse reports an entry that breaks a rule; the message starts with the
// entry's name so that the user can find it in their tree.
func refuse(name, format string, args ...any) *Error {
	return &Error{Kind: BadArchive, msg: name + ": " + fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *Error {
	return &Error{Kind: BadRequest, msg: fmt.Sprintf(format, args...)}
}

// ioError wraps a filesystem failure, naming the entry (or path) concerned.
func ioError(name string, err error) *Error {
	return &Error{Kind: IOError, msg: name + ": " + err.Error(), err: err}
}

// Request describes one put_tar.
type Request struct {
	Dest       string // absolute, clean; see CheckDest
	MaxBytes   int64  // cap on the sum of regular file sizes, > 0
	MaxEntries int64  // cap on the number of entries, > 0
	// Logf reports problems that do not fail the request (a staging
	// directory that could not be removed after success); may be nil.
	Logf func(format string, args ...any)
}

// Stats are reported in the ok reply. Files counts regular files and
// hardlinks, Bytes the regular files' data.
type Stats struct {
	Files    int64
	Dirs     int64
	Symlinks int64
	Bytes    int64
}

// CheckDest validates dest as a string: absolute and clean (no "..", no "//",
// no trailing "/" except for "/" itself). The filesystem is checked by Put.
func CheckDest(dest string) error {
	switch {
	case dest == "":
		return badRequest("dest must be a non-empty path")
	case strings.IndexByte(dest, 0) >= 0:
		return badRequest("dest must not contain a NUL byte")
	case !strings.HasPrefix(dest, "/"):
		return badRequest("dest %q must be an absolute path", dest)
	case path.Clean(dest) != dest:
		return badRequest("dest %q must be a clean path (no .., no //, no trailing /)", dest)
	}
	return nil
}

// mergeMu serialises the moves into place of concurrent transfers: two
// merges into overlapping trees would otherwise interleave their checks and
// renames, and a rollback could then undo the other transfer's work.
var mergeMu sync.Mutex

// Put reads a tar archive from r and puts its tree into req.Dest. r must
// return io.EOF only when the host has sent the whole stream; any other read
// error aborts the transfer. Put reads r up to that EOF even after the
// archive's end-of-archive marker (the bytes there must be zero padding), so
// a transfer is only committed once the host has declared it complete.
//
// On error, dest is left as it was: the staging directory is removed, and so
// are the missing parents of dest that Put created.
func Put(r io.Reader, req Request) (st Stats, err error) {
	logf := req.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := CheckDest(req.Dest); err != nil {
		return Stats{}, err
	}
	if req.MaxBytes <= 0 || req.MaxEntries <= 0 {
		return Stats{}, badRequest("max_bytes and max_entries must be positive integers")
	}
	exists, created, err := prepareDest(req.Dest)
	defer func() {
		if err != nil {
			removeCreated(created)
		}
	}()
	if err != nil {
		return Stats{}, err
	}
	// When dest exists, staging inside it is the only place guaranteed to
	// be on dest's filesystem (dest may be a mount point). When dest is
	// missing, its parent's filesystem is where dest will be created.
	parent := req.Dest
	if !exists {
		parent = path.Dir(req.Dest)
	}
	stg, err := newStaging(parent)
	if err != nil {
		return Stats{}, err
	}
	keepStaging := false
	defer func() {
		if keepStaging {
			return
		}
		if rerr := removeTree(stg.dir); rerr != nil {
			logf("put_tar: removing %s: %v", stg.dir, rerr)
		}
	}()

	x := newExtractor(stg.tree, req)
	if exists {
		// The staging directory sits among dest's entries; an archive
		// entry of the same name would make the merge move the staging
		// directory into itself.
		x.reserved = path.Base(stg.dir)
	}
	if st, err = x.run(r); err != nil {
		return Stats{}, err
	}

	mergeMu.Lock()
	defer mergeMu.Unlock()
	m := &merger{staging: stg.dir}
	if err := m.commit(stg.tree, req.Dest); err != nil {
		if uerr := m.rollback(); uerr != nil {
			// What dest held before may now live in the staging
			// directory only: keep it for a human to recover.
			keepStaging = true
			logf("put_tar: rolling back %s: %v (previous entries kept in %s)", req.Dest, uerr, stg.dir)
			return Stats{}, &Error{Kind: IOError, err: err,
				msg: fmt.Sprintf("%v; rolling back also failed (%v): %s may be partly updated, its previous entries are in %s", err, uerr, req.Dest, stg.dir)}
		}
		return Stats{}, err
	}
	return st, nil
}

// prepareDest checks every existing component of dest and creates the
// missing parents (0755). dest itself is not created: it will be the staged
// tree, renamed. created lists the new directories, outermost first.
func prepareDest(dest string) (exists bool, created []string, err error) {
	cur := ""
	parts := strings.Split(strings.TrimPrefix(dest, "/"), "/")
	if dest == "/" {
		parts = nil
	}
	check := func(p string) (bool, error) {
		fi, err := os.Lstat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return false, nil
		case err != nil:
			return false, ioError(p, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			return false, badRequest("dest: %s is a symlink (symlinks are never followed)", p)
		case !fi.IsDir():
			return false, badRequest("dest: %s exists and is not a directory", p)
		}
		return true, nil
	}
	if _, err := check("/"); err != nil {
		return false, nil, err
	}
	for i, part := range parts {
		cur += "/" + part
		ok, err := check(cur)
		if err != nil {
			return false, created, err
		}
		if ok {
			continue
		}
		if i == len(parts)-1 {
			return false, created, nil
		}
		if err := os.Mkdir(cur, 0o755); err != nil {
			return false, created, ioError(cur, err)
		}
		created = append(created, cur)
		if err := os.Chmod(cur, 0o755); err != nil { // whatever the umask
			return false, created, ioError(cur, err)
		}
	}
	return true, created, nil
}

// removeCreated removes directories prepareDest created, innermost first.
// Only empty directories go: if anything else put files there meanwhile,
// those stay.
func removeCreated(created []string) {
	for i := len(created) - 1; i >= 0; i-- {
		_ = os.Remove(created[i])
	}
}

type staging struct {
	dir  string // <parent>/.pyro-staging-<random>, 0700
	tree string // dir/tree: the archive root
}

// newStaging creates a fresh staging directory in parent. The archive root
// is a subdirectory so that the merge can park displaced entries of dest in
// dir/old (see merger) without any possible clash with archive names.
func newStaging(parent string) (*staging, error) {
	for attempt := 0; ; attempt++ {
		var b [8]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, ioError("staging directory", err)
		}
		dir := join(parent, StagingPrefix+hex.EncodeToString(b[:]))
		err := os.Mkdir(dir, 0o700)
		if errors.Is(err, fs.ErrExist) && attempt < 10 {
			continue
		}
		if err != nil {
			return nil, ioError(dir, err)
		}
		s := &staging{dir: dir, tree: dir + "/tree"}
		if err := os.Mkdir(s.tree, 0o700); err != nil {
			_ = os.Remove(dir)
			return nil, ioError(s.tree, err)
		}
		return s, nil
	}
}

// join is path.Join for a clean absolute dir and a single name, without the
// cleaning (which would hide mistakes).
func join(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}
