package wsfs

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// tree makes a root with a file, a nested file, an inside and an outside
// symlink, and a secret outside the root.
func tree(t *testing.T) (string, string, *Root) {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "ws")
	must(t, os.MkdirAll(filepath.Join(root, "src", "deep"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "a.txt"), []byte("hello\n"), 0o640))
	must(t, os.WriteFile(filepath.Join(root, "src", "deep", "b.txt"), []byte("bee\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(base, "secret"), []byte("host secret\n"), 0o600))
	must(t, os.Symlink("src/deep/b.txt", filepath.Join(root, "inside")))
	must(t, os.Symlink("../secret", filepath.Join(root, "out")))
	must(t, os.Symlink("/", filepath.Join(root, "slash")))
	r, err := OpenRoot(root)
	must(t, err)
	t.Cleanup(r.Close)
	return base, root, r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestReadFollowsOnlyInside(t *testing.T) {
	_, _, r := tree(t)
	got, err := r.Read("inside", 100)
	must(t, err)
	if string(got.Data) != "bee\n" || got.Size != 4 || got.Truncated {
		t.Fatalf("inside: %+v", got)
	}
	for _, p := range []string{"out", "slash/etc/passwd", "../secret", "/etc/passwd", "src/../../secret"} {
		if _, err := r.Read(p, 100); err == nil {
			t.Fatalf("%s: read succeeded", p)
		} else if !errors.Is(err, ErrOutside) && !errors.Is(err, ErrBadPath) {
			t.Fatalf("%s: %v", p, err)
		}
	}
	got, err = r.Read("a.txt", 3)
	must(t, err)
	if string(got.Data) != "hel" || !got.Truncated || got.Mode != 0o640 {
		t.Fatalf("truncated read: %+v", got)
	}
	if _, err := r.Read("src", 10); !errors.Is(err, ErrIsDir) {
		t.Fatalf("dir: %v", err)
	}
	if _, err := r.Read("nope", 10); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
}

func TestReadRefusesFIFOWithoutBlocking(t *testing.T) {
	_, root, r := tree(t)
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	if _, err := r.Read("fifo", 10); !errors.Is(err, ErrNotFile) {
		t.Fatalf("fifo: %v", err)
	}
}

func TestWalk(t *testing.T) {
	_, _, r := tree(t)
	var got []Entry
	truncated, err := r.Walk(".", WalkOptions{Recursive: true, MaxEntries: 100, Hash: true, HashMaxBytes: 1 << 20}, func(e Entry) error {
		got = append(got, e)
		return nil
	})
	must(t, err)
	if truncated {
		t.Fatal("truncated")
	}
	paths := []string{}
	for _, e := range got {
		paths = append(paths, e.Path+":"+e.Type)
	}
	want := []string{"a.txt:file", "inside:symlink", "out:symlink", "slash:symlink", "src:dir", "src/deep:dir", "src/deep/b.txt:file"}
	if len(paths) != len(want) {
		t.Fatalf("paths %v", paths)
	}
	for i := range want {
		if paths[i] != want[i] {
			t.Fatalf("paths %v, want %v", paths, want)
		}
	}
	if got[0].SHA256 != "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03" || got[2].Target != "../secret" {
		t.Fatalf("entries %+v", got)
	}
	// Not recursive, and bounded.
	var n int
	truncated, err = r.Walk(".", WalkOptions{MaxEntries: 2}, func(Entry) error { n++; return nil })
	must(t, err)
	if !truncated || n != 2 {
		t.Fatalf("bounded: %v %d", truncated, n)
	}
	// A directory reached through an inside symlink is listed; one outside is refused.
	if _, err := r.Walk("slash", WalkOptions{MaxEntries: 10}, func(Entry) error { return nil }); !errors.Is(err, ErrOutside) {
		t.Fatalf("slash: %v", err)
	}
}

func TestWriteIsAtomicAndConfined(t *testing.T) {
	base, root, r := tree(t)
	existed, err := r.Write("a.txt", []byte("new\n"), nil)
	must(t, err)
	info, _ := os.Stat(filepath.Join(root, "a.txt"))
	data, _ := os.ReadFile(filepath.Join(root, "a.txt"))
	if !existed || string(data) != "new\n" || info.Mode().Perm() != 0o640 {
		t.Fatalf("rewrite: %v %q %v", existed, data, info.Mode())
	}
	existed, err = r.Write("x/y/z.txt", []byte("z"), nil)
	must(t, err)
	if existed {
		t.Fatal("existed")
	}
	if data, _ := os.ReadFile(filepath.Join(root, "x", "y", "z.txt")); string(data) != "z" {
		t.Fatalf("nested: %q", data)
	}
	for _, p := range []string{"out", "slash/tmp/x", "../x", "inside"} {
		if _, err := r.Write(p, []byte("pwned"), nil); err == nil {
			t.Fatalf("%s: write succeeded", p)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(base, "secret")); string(data) != "host secret\n" {
		t.Fatal("the secret changed")
	}
	if _, err := r.Write("src", []byte("x"), nil); !errors.Is(err, ErrIsDir) {
		t.Fatalf("dir: %v", err)
	}
	// No temporary files are left behind.
	names, _ := os.ReadDir(root)
	for _, n := range names {
		if len(n.Name()) > 11 && n.Name()[:11] == ".pyro-write" {
			t.Fatalf("left %s", n.Name())
		}
	}
}

func TestRemove(t *testing.T) {
	base, root, r := tree(t)
	must(t, r.Remove("out")) // the link, not what it points to
	if _, err := os.Stat(filepath.Join(base, "secret")); err != nil {
		t.Fatal(err)
	}
	must(t, r.Remove("src/deep/b.txt"))
	if _, err := os.Stat(filepath.Join(root, "src", "deep", "b.txt")); !os.IsNotExist(err) {
		t.Fatal("still there")
	}
	if err := r.Remove("src"); !errors.Is(err, ErrIsDir) {
		t.Fatalf("dir: %v", err)
	}
	if err := r.Remove("slash/etc/passwd"); !errors.Is(err, ErrOutside) {
		t.Fatalf("outside: %v", err)
	}
}

func TestTar(t *testing.T) {
	_, root, r := tree(t)
	must(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
	var buf bytes.Buffer
	st, err := r.Tar(".", &buf, TarLimits{MaxBytes: 1 << 20, MaxEntries: 100})
	must(t, err)
	if st.Files != 2 || st.Dirs != 2 || st.Symlinks != 3 || st.Skipped != 1 || st.Bytes != 10 {
		t.Fatalf("stats %+v", st)
	}
	tr := tar.NewReader(&buf)
	names := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		must(t, err)
		body, _ := io.ReadAll(tr)
		names[h.Name] = string(body) + h.Linkname
	}
	if names["a.txt"] != "hello\n" || names["out"] != "../secret" || names["src/deep/b.txt"] != "bee\n" {
		t.Fatalf("archive %v", names)
	}
	// A single file is one entry by its base name.
	buf.Reset()
	_, err = r.Tar("src/deep/b.txt", &buf, TarLimits{MaxBytes: 100, MaxEntries: 10})
	must(t, err)
	h, err := tar.NewReader(&buf).Next()
	must(t, err)
	if h.Name != "b.txt" {
		t.Fatalf("name %s", h.Name)
	}
	// Limits stop the walk.
	if _, err := r.Tar(".", io.Discard, TarLimits{MaxBytes: 5, MaxEntries: 100}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("bytes: %v", err)
	}
	if _, err := r.Tar(".", io.Discard, TarLimits{MaxBytes: 100, MaxEntries: 2}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("entries: %v", err)
	}
	if _, err := r.Tar("slash", io.Discard, TarLimits{MaxBytes: 100, MaxEntries: 2}); !errors.Is(err, ErrOutside) {
		t.Fatalf("outside: %v", err)
	}
}
