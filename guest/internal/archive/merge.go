package archive

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"syscall"
)

// mountInfo lists the mounts of this process's view of the filesystem.
const mountInfo = "/proc/self/mountinfo"

// osRename is os.Rename; tests replace it to make a merge fail half-way.
var osRename = os.Rename

// merger moves a staged tree into dest with renames only, keeping a journal
// so that a failure half-way can be undone: what dest held at a replaced
// path is not deleted but parked in the staging directory (staging/old/N,
// same filesystem) until the whole merge has succeeded, and is removed with
// the staging directory afterwards.
type merger struct {
	staging string
	old     string // staging/old once created
	parked  int
	undo    []func() error
}

// commit merges tree into dest. A dest that does not exist (the usual case
// for a fresh tree) is just the staged tree, renamed in one step.
func (m *merger) commit(tree, dest string) error {
	fi, err := os.Lstat(dest)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Chmod(tree, 0o755); err != nil {
			return ioError(dest, err)
		}
		return m.rename(tree, dest, dest+": cannot move into place")
	case err != nil:
		return ioError(dest, err)
	case !fi.IsDir(): // created meanwhile by someone else
		return badRequest("dest: %s exists and is not a directory", dest)
	}
	return m.mergeDir(tree, dest)
}

// mergeDir merges the staged directory src into the real directory dst.
// Only Lstat is used on dst's entries: a symlink there is replaced like a
// file, never followed. A directory that exists on both sides is merged
// into and keeps its own mode, owner and times.
func (m *merger) mergeDir(src, dst string) error {
	names, err := readNames(src)
	if err != nil {
		return ioError(src, err)
	}
	for _, name := range names {
		s, d := src+"/"+name, join(dst, name)
		sfi, err := os.Lstat(s)
		if err != nil {
			return ioError(s, err)
		}
		dfi, err := os.Lstat(d)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			err = m.rename(s, d, d+": cannot move into place")
		case err != nil:
			err = ioError(d, err)
		case sfi.IsDir() && dfi.IsDir():
			err = m.mergeDir(s, d)
		default:
			if err = m.park(d, dfi); err == nil {
				err = m.rename(s, d, d+": cannot move into place")
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// park moves dest's entry at d out of the way, into the staging directory.
func (m *merger) park(d string, fi fs.FileInfo) error {
	if fi.IsDir() {
		// The parked tree is deleted after the merge. A mount inside
		// it would move along with it (only a mount point itself
		// cannot be renamed), and its files would be deleted too.
		if mps := mountsUnder(d); len(mps) > 0 {
			return &Error{Kind: IOError, msg: fmt.Sprintf("%s: cannot replace a directory that holds the mount point %s", d, mps[0])}
		}
	}
	if m.old == "" {
		if err := os.Mkdir(m.staging+"/old", 0o700); err != nil {
			return ioError(m.staging+"/old", err)
		}
		m.old = m.staging + "/old"
	}
	m.parked++
	return m.rename(d, fmt.Sprintf("%s/%d", m.old, m.parked), d+": cannot replace")
}

// rename renames and journals the inverse. os.Rename also refuses to
// replace an existing directory, which a merge never means to do.
func (m *merger) rename(from, to, what string) error {
	if err := osRename(from, to); err != nil {
		msg := what + ": " + cause(err).Error()
		if errors.Is(err, syscall.EXDEV) {
			msg += " (another filesystem is mounted below dest; put the files into that mount point directly)"
		}
		return &Error{Kind: IOError, msg: msg, err: err}
	}
	m.undo = append(m.undo, func() error { return osRename(to, from) })
	return nil
}

// rollback undoes the journal, newest first: a replaced entry's new
// version leaves before the parked original returns.
func (m *merger) rollback() error {
	var first error
	for i := len(m.undo) - 1; i >= 0; i-- {
		if err := m.undo[i](); err != nil && first == nil {
			first = err
		}
	}
	m.undo = nil
	return first
}

// cause strips the operation and paths of an os error; messages here name
// the path themselves.
func cause(err error) error {
	var pe *fs.PathError
	var le *os.LinkError
	switch {
	case errors.As(err, &pe):
		return pe.Err
	case errors.As(err, &le):
		return le.Err
	}
	return err
}

// readNames lists a real directory (never through a symlink), sorted so
// that merges and messages are deterministic.
func readNames(dir string) ([]string, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// removeTree removes p and, if it is a directory, everything beneath it,
// without following symlinks and without entering another filesystem.
func removeTree(p string) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return os.Remove(p)
	}
	return removeDir(p, devOf(fi))
}

func removeDir(dir string, dev uint64) error {
	// A staged or parked directory may have a read-only mode, which would
	// keep its entries (when not running as root); it is going anyway.
	_ = os.Chmod(dir, 0o700)
	names, err := readNames(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		p := dir + "/" + name
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			err = os.Remove(p)
		} else if devOf(fi) != dev {
			err = fmt.Errorf("%s is a mount point of another filesystem; not removing it", p)
		} else {
			err = removeDir(p, dev)
		}
		if err != nil {
			return err
		}
	}
	return os.Remove(dir)
}

func devOf(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Dev)
	}
	return 0
}

// mountsUnder lists the mount points at or below dir. Without /proc it
// finds none; removeTree still refuses to cross into another device.
func mountsUnder(dir string) []string {
	info, err := os.ReadFile(mountInfo)
	if err != nil {
		return nil
	}
	return mountPointsUnder(string(info), dir)
}

// mountPointsUnder parses mountinfo (proc(5)): the fifth field is the mount
// point, with space, tab, newline and backslash escaped as \ooo.
func mountPointsUnder(info, dir string) []string {
	var out []string
	for _, line := range strings.Split(info, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		mp := unescapeOctal(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") || dir == "/" {
			out = append(out, mp)
		}
	}
	return out
}

func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
