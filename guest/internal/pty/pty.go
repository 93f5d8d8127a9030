// Package pty opens pseudo-terminals (/dev/ptmx) and controls them with the
// few ioctls shells need, using the syscall package only.
package pty

import (
	"fmt"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// Ioctl numbers of linux/tty.h that the syscall package lacks.
const (
	tiocsptlck = 0x40045431 // _IOW('T', 0x31, int)
	tiocgptn   = 0x80045430 // _IOR('T', 0x30, unsigned int)
)

// Ptmx is the multiplexer opened for a new terminal.
var Ptmx = "/dev/ptmx"

// Open returns a new terminal: its master, which the agent reads and writes
// (non-blocking, so reads and writes honour deadlines and Close interrupts
// them), and its slave, which the child gets as its terminal. Neither is
// inherited across exec (close-on-exec) and opening them does not make
// either the agent's controlling terminal.
func Open() (master, slave *os.File, err error) {
	mfd, err := syscall.Open(Ptmx, syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: Ptmx, Err: err}
	}
	fail := func(op string, err error) (*os.File, *os.File, error) {
		syscall.Close(mfd)
		return nil, nil, fmt.Errorf("pty: %s: %w", op, err)
	}
	var unlock int32
	if err := ioctl(mfd, tiocsptlck, uintptr(unsafe.Pointer(&unlock))); err != nil {
		return fail("unlock", err)
	}
	var n uint32
	if err := ioctl(mfd, tiocgptn, uintptr(unsafe.Pointer(&n))); err != nil {
		return fail("get number", err)
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	sfd, err := syscall.Open(name, syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fail("open "+name, err)
	}
	// A non-blocking descriptor goes to the runtime's poller.
	return os.NewFile(uintptr(mfd), Ptmx), os.NewFile(uintptr(sfd), name), nil
}

type winsize struct {
	Row, Col, Xpixel, Ypixel uint16
}

// SetSize sets the terminal's size; the kernel sends SIGWINCH to its
// foreground process group.
func SetSize(master *os.File, cols, rows int) error {
	ws := winsize{Row: uint16(rows), Col: uint16(cols)}
	return control(master, func(fd uintptr) error {
		return ioctl(int(fd), syscall.TIOCSWINSZ, uintptr(unsafe.Pointer(&ws)))
	})
}

// Size returns the terminal's size.
func Size(master *os.File) (cols, rows int, err error) {
	var ws winsize
	err = control(master, func(fd uintptr) error {
		return ioctl(int(fd), syscall.TIOCGWINSZ, uintptr(unsafe.Pointer(&ws)))
	})
	return int(ws.Col), int(ws.Row), err
}

// ForegroundPgrp returns the terminal's foreground process group, asked
// through the master (which is allowed although the agent is not in the
// terminal's session).
func ForegroundPgrp(master *os.File) (int, error) {
	var pgrp int32
	err := control(master, func(fd uintptr) error {
		return ioctl(int(fd), syscall.TIOCGPGRP, uintptr(unsafe.Pointer(&pgrp)))
	})
	return int(pgrp), err
}

// control runs fn on f's descriptor without taking it out of non-blocking
// mode (which File.Fd would do).
func control(f *os.File, fn func(fd uintptr) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(fd) }); err != nil {
		return err
	}
	return ferr
}

func ioctl(fd int, req, arg uintptr) error {
	for {
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, arg)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		return nil
	}
}
