package initsys

import (
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"unsafe"
)

func TestParseCmdline(t *testing.T) {
	cfg, ok, err := ParseCmdline("console=ttyS0 pyro.ip=10.0.2.15/24 pyro.gw=10.0.2.2 pyro.dns=10.0.2.3 quiet\n")
	if err != nil || !ok {
		t.Fatalf("ok=%v err=%v", ok, err)
	}
	if cfg.Addr != [4]byte{10, 0, 2, 15} || cfg.Mask != [4]byte{255, 255, 255, 0} {
		t.Fatalf("addr %v mask %v", cfg.Addr, cfg.Mask)
	}
	if cfg.Gateway == nil || *cfg.Gateway != [4]byte{10, 0, 2, 2} || cfg.DNS == nil || *cfg.DNS != [4]byte{10, 0, 2, 3} {
		t.Fatalf("gw %v dns %v", cfg.Gateway, cfg.DNS)
	}

	if cfg.MTU != 0 {
		t.Fatalf("mtu without pyro.mtu: %d", cfg.MTU)
	}
	if cfg, _, err := ParseCmdline("pyro.ip=10.0.2.15/24 pyro.mtu=65520"); err != nil || cfg.MTU != 65520 {
		t.Fatalf("mtu: %d %v", cfg.MTU, err)
	}

	cfg, ok, err = ParseCmdline("pyro.ip=192.168.1.7/30")
	if err != nil || !ok || cfg.Mask != [4]byte{255, 255, 255, 252} || cfg.Gateway != nil || cfg.DNS != nil {
		t.Fatalf("ip only: %+v %v %v", cfg, ok, err)
	}

	if _, ok, err := ParseCmdline("console=ttyS0 pyro.gw=10.0.0.1"); ok || err != nil {
		t.Fatalf("no pyro.ip: ok=%v err=%v", ok, err)
	}
	for _, bad := range []string{"pyro.ip=10.0.0.1", "pyro.ip=10.0.0.1/33", "pyro.ip=fe80::1/64", "pyro.ip=10.0.0.1/8 pyro.gw=x", "pyro.ip=10.0.0.1/8 pyro.dns=::1", "pyro.ip=10.0.0.1/8 pyro.mtu=100", "pyro.ip=10.0.0.1/8 pyro.mtu=70000", "pyro.ip=10.0.0.1/8 pyro.mtu=x"} {
		if _, _, err := ParseCmdline(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The ioctl argument structs must match the kernel's layouts exactly.
func TestIoctlLayouts(t *testing.T) {
	if s := unsafe.Sizeof(ifreqAddr{}); s != 40 {
		t.Errorf("ifreqAddr is %d bytes, want 40", s)
	}
	if s := unsafe.Sizeof(ifreqFlags{}); s != 40 {
		t.Errorf("ifreqFlags is %d bytes, want 40", s)
	}
	if s := unsafe.Sizeof(ifreqMTU{}); s != 40 {
		t.Errorf("ifreqMTU is %d bytes, want 40", s)
	}
	if unsafe.Sizeof(uintptr(0)) == 8 {
		var rt rtentry
		// struct rtentry on LP64: 120 bytes, rt_flags at 56, rt_dev at 88.
		if s := unsafe.Sizeof(rt); s != 120 {
			t.Errorf("rtentry is %d bytes, want 120", s)
		}
		if o := unsafe.Offsetof(rt.flags); o != 56 {
			t.Errorf("rt_flags at %d, want 56", o)
		}
		if o := unsafe.Offsetof(rt.dev); o != 88 {
			t.Errorf("rt_dev at %d, want 88", o)
		}
	}
	sa := inet4([4]byte{1, 2, 3, 4})
	if sa.Family != syscall.AF_INET || sa.Port != 0 || sa.Addr != [4]byte{1, 2, 3, 4} {
		t.Errorf("inet4: %+v", sa)
	}
}

func TestReadModuleList(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "load-order")
	content := "# comment\nvirtio.ko\n\n  virtio_ring.ko  \nvirtio_blk.ko.xz\n"
	if err := os.WriteFile(list, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := ReadModuleList(list)
	want := []string{"virtio.ko", "virtio_ring.ko", "virtio_blk.ko.xz"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v %v, want %v", got, err, want)
	}
	if err := os.WriteFile(list, []byte("../../etc/passwd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadModuleList(list); err == nil {
		t.Fatal("path in module list accepted")
	}
	// A missing list is not an error worth logging (everything built in).
	var logged []string
	LoadModules(filepath.Join(dir, "missing"), func(f string, a ...any) { logged = append(logged, f) })
	if len(logged) != 0 {
		t.Fatalf("logged %v", logged)
	}
}

func TestRemoveTreeStaysOnDevice(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"a/b/c", "d"} {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "a/b/c/file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	// Entries on another device (a mount point) must be left alone.
	if err := removeTree(dir, uint64(st.Dev)+1); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 3 {
		t.Fatalf("removed entries of a foreign device: %v", entries)
	}
	if err := removeTree(dir, uint64(st.Dev)); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left %v", entries)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Fatal("symlink target removed!")
	}
}
