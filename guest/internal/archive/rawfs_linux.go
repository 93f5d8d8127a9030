package archive

import (
	"syscall"
	"time"
	"unsafe"
)

// A regular file is created and finished with raw system calls, which do not
// tell Go's scheduler they are in the kernel: under emulation nearly every
// filesystem call is slower than the scheduler's ~20 µs threshold, and a call
// it knows of then has its P handed to another thread. Only calls that finish
// without waiting for the disk are raw (create, chmod, times, close); data is
// written with ordinary calls, since the kernel's dirty-page throttling can
// hold a write back for long. Transfers run with a second P (see the session
// package), so a raw call never stops the agent.

// atFdCwd is AT_FDCWD (-100) as a register value.
const atFdCwd = ^uintptr(99)

func rawErr(errno syscall.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}

// rawCreateExcl opens path for writing, creating it with mode 0600, and
// fails if anything exists there (a symlink included: never followed).
func rawCreateExcl(path string) (int, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	flags := syscall.O_WRONLY | syscall.O_CREAT | syscall.O_EXCL | syscall.O_NOFOLLOW | syscall.O_CLOEXEC
	for {
		fd, _, errno := syscall.RawSyscall6(syscall.SYS_OPENAT, atFdCwd, uintptr(unsafe.Pointer(p)), uintptr(flags), 0o600, 0, 0)
		if errno == syscall.EINTR {
			continue
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
}

// rawFinish sets the file's mode and times through its descriptor and
// closes it; the descriptor is closed even when setting them fails.
func rawFinish(fd int, mode uint32, mtime time.Time) error {
	_, _, errno := syscall.RawSyscall(syscall.SYS_FCHMOD, uintptr(fd), uintptr(mode), 0)
	err := rawErr(errno)
	if err == nil {
		ts := [2]syscall.Timespec{syscall.NsecToTimespec(mtime.UnixNano()), syscall.NsecToTimespec(mtime.UnixNano())}
		// utimensat(fd, NULL, times, 0) is futimens(fd, times).
		_, _, errno = syscall.RawSyscall6(syscall.SYS_UTIMENSAT, uintptr(fd), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
		err = rawErr(errno)
	}
	if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0); err == nil && errno != syscall.EINTR {
		err = rawErr(errno)
	}
	return err
}

// rawClose closes fd after a failure; its own error adds nothing.
func rawClose(fd int) {
	_, _, _ = syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
}

// writeAll writes p to fd with ordinary calls (see above).
func writeAll(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := syscall.Write(fd, p)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
