package identity

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

func TestValidate(t *testing.T) {
	ok := []Request{
		{},
		{Entropy: make([]byte, 4096), TimeUnixMs: ptr(int64(1700000000123))},
		{Hostname: ptr("vm-1.example"), MachineID: ptr(strings.Repeat("aB", 16))},
	}
	for i, r := range ok {
		if err := r.Validate(); err != nil {
			t.Errorf("valid request %d rejected: %v", i, err)
		}
	}
	bad := []Request{
		{Entropy: make([]byte, 4097)},
		{TimeUnixMs: ptr(int64(-1))},
		{Hostname: ptr("")},
		{Hostname: ptr("has space")},
		{Hostname: ptr("-leading")},
		{Hostname: ptr("a..b")},
		{Hostname: ptr(strings.Repeat("a", 65))},
		{MachineID: ptr(strings.Repeat("0", 32))},
		{MachineID: ptr(strings.Repeat("g", 32))},
		{MachineID: ptr(strings.Repeat("a", 31))},
	}
	for i, r := range bad {
		if err := r.Validate(); err == nil {
			t.Errorf("invalid request %d accepted: %+v", i, r)
		}
	}
}

func TestMachineIDNormalised(t *testing.T) {
	r := Request{MachineID: ptr("0123456789ABCDEF0123456789abcdef")}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if *r.MachineID != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("got %q", *r.MachineID)
	}
}

// Off-VM (Live false) Apply must not touch anything, even with every field
// set; the directories below do not exist, so any attempt would fail.
func TestApplyNotLiveIsNoop(t *testing.T) {
	a := Applier{Live: false, EtcDir: "/nonexistent-7f3a", RandomDevice: "/nonexistent-7f3a/urandom"}
	r := Request{Entropy: []byte{1, 2, 3}, TimeUnixMs: ptr(int64(1)), Hostname: ptr("x"), MachineID: ptr(strings.Repeat("1", 32))}
	if err := a.Apply(r); err != nil {
		t.Fatal(err)
	}
}

func TestEntropyIoctlArg(t *testing.T) {
	data := []byte{9, 8, 7, 6, 5}
	b := EntropyIoctlArg(data)
	if len(b) != 8+len(data) {
		t.Fatalf("len %d", len(b))
	}
	// amd64 and arm64 are little-endian.
	if bits := binary.LittleEndian.Uint32(b[0:]); bits != 40 {
		t.Fatalf("entropy_count %d, want 40 bits", bits)
	}
	if n := binary.LittleEndian.Uint32(b[4:]); n != 5 {
		t.Fatalf("buf_size %d, want 5", n)
	}
	if string(b[8:]) != string(data) {
		t.Fatal("payload not copied")
	}
}

func TestWriteFileAtomicReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(path, "nameserver 10.0.0.1\n", 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
		t.Fatalf("not a regular 0644 file: %v %v", fi.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != "nameserver 10.0.0.1\n" {
		t.Fatalf("content %q", b)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatal("symlink target was modified")
	}
	if _, err := os.Stat(path + ".pyro-tmp"); err == nil {
		t.Fatal("temporary file left behind")
	}
}

func TestBootID(t *testing.T) {
	want := ""
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		want = strings.TrimSpace(string(b))
	}
	if got := BootID(); got != want {
		t.Fatalf("BootID() = %q, want %q", got, want)
	}
}
