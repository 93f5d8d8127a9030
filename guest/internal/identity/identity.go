// Package identity applies the per-boot identity a host sends in hello:
// entropy for the kernel RNG, the wall clock, the hostname and machine-id.
//
// VMs are often restored from identical images or snapshots, so without this
// every VM would start with the same RNG state, clock and ids.
package identity

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unsafe"

	"pyro/guest/internal/protocol"
)

// ioctl numbers from <linux/random.h>. They are architecture independent
// for the architectures we run on (amd64, arm64).
const (
	rndAddEntropy  = 0x40085203 // _IOW('R', 0x03, int[2])
	rndReseedCRNG  = 0x5207     // _IO('R', 0x07)
	hostNameMax    = 64         // HOST_NAME_MAX
	machineIDChars = 32
)

// Request is the validated content of a hello.
type Request struct {
	Entropy    []byte
	TimeUnixMs *int64
	Hostname   *string
	MachineID  *string // normalised to lowercase by Validate
}

// Validate checks every field and normalises the machine-id. It is applied
// in every mode so that an off-VM test run exercises the same rules.
func (r *Request) Validate() error {
	if len(r.Entropy) > protocol.MaxEntropyLen {
		return fmt.Errorf("entropy payload is %d bytes, max %d", len(r.Entropy), protocol.MaxEntropyLen)
	}
	if r.TimeUnixMs != nil && *r.TimeUnixMs < 0 {
		return errors.New("time_unix_ms must be non-negative")
	}
	if r.Hostname != nil {
		if err := ValidateHostname(*r.Hostname); err != nil {
			return err
		}
	}
	if r.MachineID != nil {
		id, err := NormalizeMachineID(*r.MachineID)
		if err != nil {
			return err
		}
		r.MachineID = &id
	}
	return nil
}

// ValidateHostname accepts RFC 1123 host names of at most HOST_NAME_MAX
// bytes. The name ends up in /etc/hostname and shell prompts, so anything
// outside [A-Za-z0-9.-] is refused rather than escaped.
func ValidateHostname(h string) error {
	if h == "" || len(h) > hostNameMax {
		return fmt.Errorf("hostname must be 1-%d bytes", hostNameMax)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("invalid hostname %q", h)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("invalid hostname %q", h)
			}
		}
	}
	return nil
}

// NormalizeMachineID returns id lowercased if it is 32 hex digits and not
// all zero (systemd treats an all-zero id as unset).
func NormalizeMachineID(id string) (string, error) {
	if len(id) != machineIDChars {
		return "", fmt.Errorf("machine_id must be %d hex digits", machineIDChars)
	}
	id = strings.ToLower(id)
	if strings.Trim(id, "0") == "" {
		return "", errors.New("machine_id must not be all zero")
	}
	for _, c := range []byte(id) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("machine_id must be %d hex digits", machineIDChars)
		}
	}
	return id, nil
}

// Applier applies a validated Request.
type Applier struct {
	// Live is true only in PID-1 mode; otherwise Apply changes nothing, so
	// running the agent on a developer machine cannot reset its clock.
	Live bool
	// EtcDir is where hostname and machine-id are written ("/etc").
	EtcDir string
	// RandomDevice receives the entropy ("/dev/urandom").
	RandomDevice string
}

// Apply mixes in entropy, sets the clock, hostname and machine-id, in that
// order, stopping at the first failure.
func (a Applier) Apply(r Request) error {
	if !a.Live {
		return nil
	}
	if len(r.Entropy) > 0 {
		if err := AddEntropy(a.randomDevice(), r.Entropy); err != nil {
			return err
		}
	}
	if r.TimeUnixMs != nil {
		ms := *r.TimeUnixMs
		tv := syscall.Timeval{Sec: ms / 1000, Usec: (ms % 1000) * 1000}
		if err := syscall.Settimeofday(&tv); err != nil {
			return fmt.Errorf("settimeofday: %w", err)
		}
	}
	if r.Hostname != nil {
		if err := syscall.Sethostname([]byte(*r.Hostname)); err != nil {
			return fmt.Errorf("sethostname: %w", err)
		}
		if err := WriteFileAtomic(filepath.Join(a.etcDir(), "hostname"), *r.Hostname+"\n", 0o644); err != nil {
			return err
		}
	}
	if r.MachineID != nil {
		if err := WriteFileAtomic(filepath.Join(a.etcDir(), "machine-id"), *r.MachineID+"\n", 0o444); err != nil {
			return err
		}
	}
	return nil
}

func (a Applier) etcDir() string {
	if a.EtcDir == "" {
		return "/etc"
	}
	return a.EtcDir
}

func (a Applier) randomDevice() string {
	if a.RandomDevice == "" {
		return "/dev/urandom"
	}
	return a.RandomDevice
}

// AddEntropy credits data to the kernel pool at 8 bits per byte (the host's
// bytes come from its own CSPRNG) and then forces the CRNG to reseed, so the
// new entropy affects getrandom() output immediately rather than at the next
// scheduled reseed.
func AddEntropy(device string, data []byte) error {
	f, err := os.OpenFile(device, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", device, err)
	}
	defer f.Close()
	buf := EntropyIoctlArg(data)
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), rndAddEntropy, uintptr(unsafe.Pointer(&buf[0]))); e != 0 {
		return fmt.Errorf("RNDADDENTROPY: %w", e)
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), rndReseedCRNG, 0); e != 0 {
		// Kernels before 4.17 lack RNDRESEEDCRNG; the entropy is still in
		// the pool and will be used at the next reseed.
		if e != syscall.ENOTTY && e != syscall.EINVAL {
			return fmt.Errorf("RNDRESEEDCRNG: %w", e)
		}
	}
	return nil
}

// EntropyIoctlArg lays out struct rand_pool_info { int entropy_count; int
// buf_size; __u32 buf[]; } in native byte order.
func EntropyIoctlArg(data []byte) []byte {
	buf := make([]byte, 8+len(data))
	*(*int32)(unsafe.Pointer(&buf[0])) = int32(8 * len(data)) // bits
	*(*int32)(unsafe.Pointer(&buf[4])) = int32(len(data))     // bytes
	copy(buf[8:], data)
	return buf
}

// WriteFileAtomic replaces path with content via a temporary file and
// rename, so a crash never leaves a truncated file and a symlink at path
// (e.g. resolv.conf pointing into an unmounted /run) is replaced rather
// than followed.
func WriteFileAtomic(path, content string, perm os.FileMode) error {
	tmp := path + ".pyro-tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(content); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chmod(tmp, perm); err != nil { // O_CREATE perm is masked by umask
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// BootID returns the kernel's boot id, or "" when it cannot be read.
func BootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
