package wsfs

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"syscall"
	"time"
)

// TarStats counts what an export put into its archive.
type TarStats struct {
	Files    int64 `json:"files"`
	Dirs     int64 `json:"dirs"`
	Symlinks int64 `json:"symlinks"`
	Bytes    int64 `json:"bytes"`
	// Skipped counts entries that cannot travel (devices, FIFOs, sockets).
	Skipped int64 `json:"skipped"`
}

// TarLimits cap an export.
type TarLimits struct {
	MaxBytes   int64
	MaxEntries int64
}

// Tar writes rel as a tar archive to w: a directory's entries relative to
// it (the directory itself is not an entry), or a regular file as one
// entry named by its base name. Symlinks travel as symlinks, never
// followed; devices, FIFOs and sockets are skipped and counted. A file
// whose size changes while it is read is sent with the size it had when
// its header was written (cut or padded with zeros). Past a limit the walk
// stops with ErrTooLarge.
func (r *Root) Tar(rel string, w io.Writer, limits TarLimits) (TarStats, error) {
	var st TarStats
	rel, err := CleanRel(rel)
	if err != nil {
		return st, err
	}
	tw := tar.NewWriter(w)
	entries := int64(0)
	add := func(hdr *tar.Header, data io.Reader) error {
		entries++
		if entries > limits.MaxEntries {
			return fail(ErrTooLarge, hdr.Name, fmt.Sprintf("more than %d entries to export", limits.MaxEntries))
		}
		if hdr.Typeflag == tar.TypeReg && st.Bytes+hdr.Size > limits.MaxBytes {
			return fail(ErrTooLarge, hdr.Name, fmt.Sprintf("more than %d bytes of files to export", limits.MaxBytes))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			st.Files++
			st.Bytes += hdr.Size
			n, err := io.Copy(tw, io.LimitReader(data, hdr.Size))
			if err != nil {
				return fmt.Errorf("%s: %w", hdr.Name, err)
			}
			if n < hdr.Size {
				if _, err := io.CopyN(tw, zeros{}, hdr.Size-n); err != nil {
					return err
				}
			}
		case tar.TypeDir:
			st.Dirs++
		case tar.TypeSymlink:
			st.Symlinks++
		}
		return nil
	}

	fd, err := r.openBeneath(rel, oPath)
	if err != nil {
		return st, err
	}
	var top syscall.Stat_t
	err = syscall.Fstat(fd, &top)
	syscall.Close(fd)
	if err != nil {
		return st, err
	}
	switch typeOf(top.Mode) {
	case "file":
		rfd, err := r.openBeneath(rel, syscall.O_RDONLY|syscall.O_NONBLOCK)
		if err != nil {
			return st, err
		}
		f := fileOf(rfd, rel)
		defer f.Close()
		if err := add(header(path.Base(rel), &top, tar.TypeReg, ""), f); err != nil {
			return st, err
		}
		return st, tw.Close()
	case "dir":
	default:
		return st, fail(ErrNotFile, rel, "is neither a regular file nor a directory")
	}
	dirfd, err := r.openBeneath(rel, syscall.O_RDONLY|syscall.O_DIRECTORY)
	if err != nil {
		return st, err
	}
	defer syscall.Close(dirfd)
	var walk func(dirfd int, prefix string) error
	walk = func(dirfd int, prefix string) error {
		names, err := readNames(dirfd)
		if err != nil {
			return err
		}
		for _, name := range names {
			est, efd, err := lstatAt(dirfd, name)
			if err != nil {
				if errors.Is(err, syscall.ENOENT) {
					continue
				}
				return fmt.Errorf("%s%s: %w", prefix, name, err)
			}
			syscall.Close(efd)
			p := prefix + name
			switch typeOf(est.Mode) {
			case "file":
				f, err := openFileAt(dirfd, name, &est)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				err = add(header(p, &est, tar.TypeReg, ""), f)
				f.Close()
				if err != nil {
					return err
				}
			case "symlink":
				target, err := readlinkAt(dirfd, name)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				if err := add(header(p, &est, tar.TypeSymlink, target), nil); err != nil {
					return err
				}
			case "dir":
				if err := add(header(p+"/", &est, tar.TypeDir, ""), nil); err != nil {
					return err
				}
				if est.Dev != top.Dev {
					continue // another filesystem mounted here: not ours to export
				}
				sub, err := syscall.Openat(dirfd, name, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
				if err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
				err = walk(sub, p+"/")
				syscall.Close(sub)
				if err != nil {
					return err
				}
			default:
				st.Skipped++
			}
		}
		return nil
	}
	if err := walk(dirfd, ""); err != nil {
		return st, err
	}
	return st, tw.Close()
}

func header(name string, st *syscall.Stat_t, typ byte, target string) *tar.Header {
	h := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Linkname: target,
		Mode:     int64(st.Mode & 0o777),
		ModTime:  time.Unix(st.Mtim.Sec, st.Mtim.Nsec).Truncate(time.Second),
		Format:   tar.FormatPAX,
	}
	if typ == tar.TypeReg {
		h.Size = st.Size
	}
	return h
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0
	}
	return len(p), nil
}
