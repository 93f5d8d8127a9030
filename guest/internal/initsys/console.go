// Package initsys performs the duties of PID 1 inside the VM: early mounts,
// kernel modules, switching to the real root, basic devices and networking,
// signal hygiene and power-off.
package initsys

import (
	"os"
	"os/signal"
	"syscall"
)

// EnsureStdFDs makes sure fds 0, 1 and 2 are open. The initramfs has no
// /dev/console, so the kernel starts us with all three closed; the next
// files we open (pipes for a child's output!) would otherwise land on them
// and our log output would be written into a command's stdout.
// A directory opened read-only is used as a placeholder because it exists
// before anything is mounted and writes to it harmlessly fail.
func EnsureStdFDs() {
	for fd := 0; fd <= 2; fd++ {
		if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), syscall.F_GETFD, 0); e != syscall.EBADF {
			continue
		}
		nfd, err := syscall.Open("/", syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
		if err != nil {
			continue
		}
		if nfd != fd {
			_ = syscall.Dup3(nfd, fd, 0)
			syscall.Close(nfd)
		}
	}
}

// MountDev mounts devtmpfs on /dev (tolerating an existing mount).
func MountDev() error {
	return mountFS("devtmpfs", "/dev", "devtmpfs", syscall.MS_NOSUID, "mode=0755", true)
}

// SetupConsole points stdout and stderr at /dev/console and stdin at
// /dev/null. It needs /dev mounted; on failure the placeholders from
// EnsureStdFDs stay and logging is silently lost, which beats not booting.
func SetupConsole() {
	if fd, err := syscall.Open("/dev/null", syscall.O_RDWR|syscall.O_CLOEXEC, 0); err == nil {
		if fd != 0 {
			_ = syscall.Dup3(fd, 0, 0)
			syscall.Close(fd)
		}
	}
	fd, err := syscall.Open("/dev/console", syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	for _, target := range []int{1, 2} {
		if fd != target {
			_ = syscall.Dup3(fd, target, 0)
		}
	}
	if fd > 2 {
		syscall.Close(fd)
	}
}

// ShieldSignals keeps stray signals from killing PID 1. The kernel only
// delivers signals to init for which it has a handler, but the Go runtime
// installs handlers for nearly everything and its default action for e.g.
// SIGTERM, SIGINT or SIGQUIT is to exit, which would panic the kernel.
// Notify (rather than signal.Ignore) is used because SIG_IGN would be
// inherited by every command the agent runs, while handlers are reset by
// execve.
func ShieldSignals(logf func(string, ...any)) {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch,
		syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGTERM,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPIPE, syscall.SIGALRM,
		syscall.SIGTSTP, syscall.SIGTTIN, syscall.SIGTTOU, syscall.SIGPWR,
		syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGVTALRM)
	go func() {
		for sig := range ch {
			if sig != syscall.SIGPIPE {
				logf("ignoring signal %v", sig)
			}
		}
	}()
}
