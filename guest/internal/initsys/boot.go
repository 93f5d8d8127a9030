package initsys

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"pyro/guest/internal/cgroup"
	"pyro/guest/internal/identity"
)

// Boot layout.
const (
	ModuleDir      = "/lib/modules/pyro"
	ModuleLoadList = ModuleDir + "/load-order"
	RootDevice     = "/dev/vda"
	NewRoot        = "/newroot"
	rootWait       = 10 * time.Second
	eth0Wait       = 2 * time.Second
	defaultHost    = "pyro"

	// MODULE_INIT_COMPRESSED_FILE lets Linux ≥ 6.2 decompress in-kernel.
	moduleInitCompressedFile = 4

	ramfsMagic = 0x858458f6
	tmpfsMagic = 0x01021994
)

// Boot runs the PID-1 sequence from the initramfs up to a configured
// system. /dev must already be mounted (see MountDev). Only failures that
// leave no usable root are returned; everything else is logged.
func Boot(logf func(string, ...any)) error {
	if err := mountFS("proc", "/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "", true); err != nil {
		return err
	}
	if err := mountFS("sysfs", "/sys", "sysfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "", true); err != nil {
		return err
	}
	LoadModules(ModuleLoadList, logf)
	if err := waitFor(RootDevice, rootWait); err != nil {
		return err
	}
	if err := switchRoot(logf); err != nil {
		return err
	}
	mountLate(logf)
	if err := cgroup.Setup(memTotal()); err != nil {
		logf("cgroups: %v (commands run without them)", err)
	}
	setDefaultHostname(logf)
	if err := LinkUp("lo"); err != nil {
		logf("lo: %v", err)
	}
	configureNetwork(logf)
	return nil
}

func mountFS(source, target, fstype string, flags uintptr, data string, okIfMounted bool) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	err := syscall.Mount(source, target, fstype, flags, data)
	if err == syscall.EBUSY && okIfMounted {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
	}
	return nil
}

// LoadModules loads each module named in listPath (one file name per line,
// relative to the list's directory, blank lines and #comments ignored) in
// order. A module that fails is logged and skipped: a missing optional
// driver should not keep the VM from booting.
func LoadModules(listPath string, logf func(string, ...any)) {
	names, err := ReadModuleList(listPath)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			logf("modules: %v", err)
		}
		return
	}
	for _, name := range names {
		if err := loadModule(filepath.Join(filepath.Dir(listPath), name)); err != nil {
			logf("modules: %s: %v", name, err)
		}
	}
}

// ReadModuleList parses a load-order file.
func ReadModuleList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "/") {
			return nil, fmt.Errorf("%s: module name %q must be a plain file name", path, line)
		}
		names = append(names, line)
	}
	return names, sc.Err()
}

func loadModule(path string) error {
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	var flags uintptr
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		if strings.HasSuffix(path, ext) {
			flags = moduleInitCompressedFile
		}
	}
	params := []byte{0} // empty parameter string
	_, _, e := syscall.Syscall(uintptr(sysFinitModule), uintptr(fd), uintptr(unsafe.Pointer(&params[0])), flags)
	if e != 0 && e != syscall.EEXIST { // EEXIST: already loaded or built in
		return e
	}
	return nil
}

func waitFor(path string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %v", path, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// switchRoot mounts the root disk and makes it "/", carrying the API
// filesystems along, like switch_root(8).
func switchRoot(logf func(string, ...any)) error {
	if err := mountFS(RootDevice, NewRoot, "ext4", 0, "", false); err != nil {
		return err
	}
	for _, dir := range []string{"/dev", "/proc", "/sys"} {
		target := NewRoot + dir
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := syscall.Mount(dir, target, "", syscall.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s: %w", dir, err)
		}
	}
	freeInitramfs(logf)
	if err := syscall.Chdir(NewRoot); err != nil {
		return err
	}
	if err := syscall.Mount(".", "/", "", syscall.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move new root to /: %w", err)
	}
	if err := syscall.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	return syscall.Chdir("/")
}

// freeInitramfs deletes the initramfs contents before it becomes
// unreachable: the rootfs cannot be unmounted, so anything left on it
// (including this binary and the modules) would pin RAM for the lifetime of
// the VM. Only files on the rootfs device itself are removed, so the new
// root mounted below it is never touched.
func freeInitramfs(logf func(string, ...any)) {
	var sfs syscall.Statfs_t
	if err := syscall.Statfs("/", &sfs); err != nil {
		return
	}
	if t := uint32(sfs.Type); t != ramfsMagic && t != tmpfsMagic {
		return // not an initramfs; leave it alone
	}
	var st syscall.Stat_t
	if err := syscall.Lstat("/", &st); err != nil {
		return
	}
	if err := removeTree("/", uint64(st.Dev)); err != nil {
		logf("freeing initramfs: %v", err)
	}
}

func removeTree(dir string, dev uint64) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var firstErr error
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		var st syscall.Stat_t
		if err := syscall.Lstat(path, &st); err != nil || uint64(st.Dev) != dev {
			continue // mount point of another filesystem: not ours to delete
		}
		if st.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			if err := removeTree(path, dev); err != nil && firstErr == nil {
				firstErr = err
			}
			err = syscall.Rmdir(path)
		} else {
			err = syscall.Unlink(path)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// mountLate sets up the filesystems commands expect on a normal system.
func mountLate(logf func(string, ...any)) {
	mounts := []struct {
		src, target, fstype string
		flags               uintptr
		data                string
	}{
		{"devpts", "/dev/pts", "devpts", syscall.MS_NOSUID | syscall.MS_NOEXEC, "mode=0620,ptmxmode=0666,gid=5"},
		{"tmpfs", "/dev/shm", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", syscall.MS_NOSUID | syscall.MS_NODEV, "mode=0755"},
	}
	for _, m := range mounts {
		if err := mountFS(m.src, m.target, m.fstype, m.flags, m.data, true); err != nil {
			logf("%v", err)
		}
	}
	// devtmpfs lacks these links; bash needs /dev/fd for <(...) and many
	// scripts write to /dev/stdout.
	links := map[string]string{
		"/dev/fd":     "/proc/self/fd",
		"/dev/stdin":  "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1",
		"/dev/stderr": "/proc/self/fd/2",
	}
	for name, target := range links {
		if err := os.Symlink(target, name); err != nil && !errors.Is(err, os.ErrExist) {
			logf("symlink %s: %v", name, err)
		}
	}
}

// memTotal is the guest's memory in bytes (MemTotal of /proc/meminfo), or 0.
func memTotal() int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kib, _ := strconv.ParseInt(f[1], 10, 64)
			return kib * 1024
		}
	}
	return 0
}

// setDefaultHostname uses the image's /etc/hostname until a host sends one
// in hello, so that the kernel's "(none)" never shows up.
func setDefaultHostname(logf func(string, ...any)) {
	name := defaultHost
	if b, err := os.ReadFile("/etc/hostname"); err == nil {
		if h := strings.TrimSpace(string(b)); identity.ValidateHostname(h) == nil {
			name = h
		}
	}
	if err := syscall.Sethostname([]byte(name)); err != nil {
		logf("sethostname: %v", err)
	}
}

// PowerOff stops the VM. It never returns: if reboot(2) fails there is
// nothing sensible left to do, and PID 1 must not exit.
func PowerOff(logf func(string, ...any)) {
	// Stop every other process first so nothing writes after the sync,
	// then make the root read-only so ext4 needs no journal replay.
	_ = syscall.Kill(-1, syscall.SIGKILL)
	syscall.Sync()
	for i := 0; i < 20; i++ {
		if syscall.Mount("", "/", "", syscall.MS_REMOUNT|syscall.MS_RDONLY, "") == nil {
			break
		}
		time.Sleep(25 * time.Millisecond) // killed processes may still hold files open
	}
	syscall.Sync()
	err := syscall.Reboot(syscall.LINUX_REBOOT_CMD_POWER_OFF)
	logf("poweroff: reboot(2): %v", err)
	select {}
}
