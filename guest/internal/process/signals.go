package process

import (
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

// signalNames maps Linux signal numbers to their conventional names. The
// syscall package's String() gives descriptions ("killed"), not names.
var signalNames = map[syscall.Signal]string{
	syscall.SIGHUP:    "SIGHUP",
	syscall.SIGINT:    "SIGINT",
	syscall.SIGQUIT:   "SIGQUIT",
	syscall.SIGILL:    "SIGILL",
	syscall.SIGTRAP:   "SIGTRAP",
	syscall.SIGABRT:   "SIGABRT",
	syscall.SIGBUS:    "SIGBUS",
	syscall.SIGFPE:    "SIGFPE",
	syscall.SIGKILL:   "SIGKILL",
	syscall.SIGUSR1:   "SIGUSR1",
	syscall.SIGSEGV:   "SIGSEGV",
	syscall.SIGUSR2:   "SIGUSR2",
	syscall.SIGPIPE:   "SIGPIPE",
	syscall.SIGALRM:   "SIGALRM",
	syscall.SIGTERM:   "SIGTERM",
	syscall.SIGSTKFLT: "SIGSTKFLT",
	syscall.SIGCHLD:   "SIGCHLD",
	syscall.SIGCONT:   "SIGCONT",
	syscall.SIGSTOP:   "SIGSTOP",
	syscall.SIGTSTP:   "SIGTSTP",
	syscall.SIGTTIN:   "SIGTTIN",
	syscall.SIGTTOU:   "SIGTTOU",
	syscall.SIGURG:    "SIGURG",
	syscall.SIGXCPU:   "SIGXCPU",
	syscall.SIGXFSZ:   "SIGXFSZ",
	syscall.SIGVTALRM: "SIGVTALRM",
	syscall.SIGPROF:   "SIGPROF",
	syscall.SIGWINCH:  "SIGWINCH",
	syscall.SIGIO:     "SIGIO",
	syscall.SIGPWR:    "SIGPWR",
	syscall.SIGSYS:    "SIGSYS",
}

// sigRTMIN is the kernel's first real-time signal. (glibc reserves the
// first two and reports SIGRTMIN as 34, but names here follow the kernel.)
const sigRTMIN = 32

// SignalName returns the conventional name of sig, e.g. "SIGKILL".
func SignalName(sig syscall.Signal) string {
	if n, ok := signalNames[sig]; ok {
		return n
	}
	if sig >= sigRTMIN && sig <= 64 {
		return "SIGRTMIN+" + strconv.Itoa(int(sig-sigRTMIN))
	}
	return "SIG" + strconv.Itoa(int(sig))
}

// ParseKillSignal accepts the signal names a kill request may carry.
func ParseKillSignal(name string) (syscall.Signal, bool) {
	switch name {
	case "SIGKILL":
		return syscall.SIGKILL, true
	case "SIGTERM":
		return syscall.SIGTERM, true
	case "SIGINT":
		return syscall.SIGINT, true
	}
	return 0, false
}

var restoreOnce sync.Once

// RestoreChildSignals makes children start with the default action for
// SIGHUP and SIGINT even when the agent itself was started with them
// ignored (as a background job of a script is): the Go runtime keeps such
// an inherited SIG_IGN, children inherit it, and a shell's jobs would then
// ignore the SIGINT that shell_signal (or Ctrl-C) sends them. The agent
// goes on ignoring those signals, through a handler that drops them, and a
// caught signal is reset to the default action in a child. In PID-1 mode
// the agent catches them already, so nothing changes there.
func RestoreChildSignals() {
	restoreOnce.Do(func() {
		var sigs []os.Signal
		for _, s := range []os.Signal{syscall.SIGHUP, syscall.SIGINT} {
			if signal.Ignored(s) {
				sigs = append(sigs, s)
			}
		}
		if len(sigs) == 0 {
			return
		}
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, sigs...)
		go func() {
			for range ch {
			}
		}()
	})
}
