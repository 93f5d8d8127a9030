package archive

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ---- helpers --------------------------------------------------------------

var testTime = time.Unix(1_600_000_000, 0)

type ent struct {
	name, body, link string
	typ              byte
	mode             int64
	mtime            time.Time
}

func file(name, body string) ent { return ent{name: name, body: body, typ: tar.TypeReg, mode: 0o644} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, to string) ent {
	return ent{name: name, link: to, typ: tar.TypeSymlink, mode: 0o777}
}
func hardlink(name, to string) ent      { return ent{name: name, link: to, typ: tar.TypeLink, mode: 0o644} }
func special(name string, typ byte) ent { return ent{name: name, typ: typ, mode: 0o644} }

// tarOf builds an archive with archive/tar, as a host might.
func tarOf(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, ModTime: e.mtime}
		if h.ModTime.IsZero() {
			h.ModTime = testTime
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeChar || e.typ == tar.TypeBlock {
			h.Devmajor, h.Devminor = 1, 3
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("writing header %q: %v", e.name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func req(dest string) Request {
	return Request{Dest: dest, MaxBytes: 1 << 20, MaxEntries: 1000}
}

func put(dest string, archive []byte) (Stats, error) {
	return Put(bytes.NewReader(archive), req(dest))
}

// wantErr checks the kind of a Put error and that its message starts with
// prefix.
func wantErr(t *testing.T, err error, kind Kind, prefix string) {
	t.Helper()
	var ae *Error
	if !errors.As(err, &ae) {
		t.Fatalf("want an *Error of kind %d starting %q, got %v", kind, prefix, err)
	}
	if ae.Kind != kind || !strings.HasPrefix(ae.Error(), prefix) {
		t.Fatalf("want kind %d starting %q, got kind %d: %q", kind, prefix, ae.Kind, ae.Error())
	}
}

// snapshot describes a tree exactly (types, modes, contents, link targets,
// file times and inodes), without following symlinks. The root's own
// mtime is left out: a staging directory inside it changes that.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		ino := fi.Sys().(*syscall.Stat_t).Ino
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = fmt.Sprintf("symlink %s ino %d", target, ino)
		case fi.IsDir():
			m[rel] = fmt.Sprintf("dir %v ino %d", fi.Mode(), ino)
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = fmt.Sprintf("file %v %d ino %d %q", fi.Mode(), fi.ModTime().UnixNano(), ino, data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	var diffs []string
	for k, v := range before {
		if after[k] != v {
			diffs = append(diffs, fmt.Sprintf("%s: %q -> %q", k, v, after[k]))
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: new %q", k, v))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 0 {
		t.Fatalf("%s changed:\n%s", what, strings.Join(diffs, "\n"))
	}
}

// noStaging fails if a staging directory is left in any of dirs.
func noStaging(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		left, _ := filepath.Glob(filepath.Join(d, StagingPrefix+"*"))
		if len(left) > 0 {
			t.Fatalf("staging left behind: %v", left)
		}
	}
}

// existingDest makes a dest tree with a bit of everything.
func existingDest(t *testing.T) (base, dest string) {
	t.Helper()
	base = t.TempDir()
	dest = filepath.Join(base, "dest")
	mustMkdir(t, dest)
	mustMkdir(t, filepath.Join(dest, "sub"))
	mustWrite(t, filepath.Join(dest, "keep.txt"), "keep")
	mustWrite(t, filepath.Join(dest, "a.txt"), "old a")
	mustWrite(t, filepath.Join(dest, "sub", "b.txt"), "old b")
	if err := os.Symlink("a.txt", filepath.Join(dest, "link")); err != nil {
		t.Fatal(err)
	}
	return base, dest
}

func mustMkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// refusedCase runs one archive that must be refused against an existing
// dest and checks that nothing changed anywhere under base.
func refusedCase(t *testing.T, archive []byte, kind Kind, prefix string) {
	t.Helper()
	base, dest := existingDest(t)
	before := snapshot(t, base)
	_, err := put(dest, archive)
	wantErr(t, err, kind, prefix)
	sameTree(t, "base", before, snapshot(t, base))
	noStaging(t, base, dest)
}

// ---- extraction -----------------------------------------------------------

func TestExtractIntoMissingDest(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "x", "y", "dest") // parents missing too
	big := strings.Repeat("0123456789abcdef", 20_000)
	dirTime := time.Unix(1_500_000_000, 0)
	fileTime := time.Unix(1_400_000_000, 0)
	d := dir("./d/")
	d.mode, d.mtime = 0o750, dirTime
	f := file("d/run.sh", "#!/bin/sh\necho hi\n")
	f.mode, f.mtime = 0o755, fileTime
	archive := tarOf(t,
		dir("./"),
		d,
		f,
		file("top.txt", "top"),
		file("deep/er/big.bin", big), // implicit parents
		symlink("d/up", "../top.txt"),
		symlink("d/here", "."),
		hardlink("d/again", "./top.txt"),
	)
	st, err := put(dest, archive)
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Files: 4, Dirs: 1, Symlinks: 2, Bytes: int64(len(big) + len(f.body) + 3)}
	if st != want {
		t.Fatalf("stats %+v, want %+v", st, want)
	}
	if got := mustRead(t, filepath.Join(dest, "deep/er/big.bin")); got != big {
		t.Fatal("big file corrupted")
	}
	if got := mustRead(t, filepath.Join(dest, "d/up")); got != "top" {
		t.Fatalf("through symlink: %q", got)
	}
	a, _ := os.Stat(filepath.Join(dest, "d/again"))
	b, _ := os.Stat(filepath.Join(dest, "top.txt"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Fatal("hardlink is not the same file")
	}
	checkMode := func(rel string, want fs.FileMode) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(dest, rel))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky); got != want {
			t.Errorf("%s: mode %v, want %v", rel, got, want)
		}
	}
	checkMode(".", 0o755)
	checkMode("d", 0o750)
	checkMode("deep", 0o755)
	checkMode("d/run.sh", 0o755)
	checkMode("top.txt", 0o644)
	for _, c := range []struct {
		rel  string
		want time.Time
	}{{"d", dirTime}, {"d/run.sh", fileTime}, {"top.txt", testTime}} {
		fi, _ := os.Lstat(filepath.Join(dest, c.rel))
		if !fi.ModTime().Equal(c.want) {
			t.Errorf("%s: mtime %v, want %v", c.rel, fi.ModTime(), c.want)
		}
	}
	for _, p := range []string{filepath.Join(base, "x"), filepath.Join(base, "x", "y")} {
		if fi, err := os.Lstat(p); err != nil || fi.Mode().Perm() != 0o755 {
			t.Errorf("parent %s: %v %v", p, fi, err)
		}
	}
	noStaging(t, base, filepath.Join(base, "x", "y"), dest)
}

func TestRefusedNames(t *testing.T) {
	cases := []struct {
		name, prefix string
	}{
		{"../escape", "../escape: path leaves the destination"},
		{"/etc/passwd", "/etc/passwd: absolute paths are not allowed"},
		{"a/../../escape", "a/../../escape: path leaves the destination"},
		{"a/../b", "a/../b: path leaves the destination"}, // any .. component
		{"", `"": empty name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A good entry first: the refusal must undo it too.
			refusedCase(t, tarOf(t, file("a.txt", "new"), file(c.name, "x")), BadArchive, c.prefix)
		})
	}
}

func TestCleanName(t *testing.T) {
	for raw, want := range map[string]string{"./a/b": "a/b", "a//b/": "a/b", "a/./b": "a/b", ".": "", "./": ""} {
		if got, err := cleanName(raw); err != nil || got != want {
			t.Errorf("cleanName(%q) = %q, %v; want %q", raw, got, err, want)
		}
	}
	// archive/tar cannot write a NUL into a name, so the rule is
	// checked here directly.
	_, err := cleanName("a\x00b")
	wantErr(t, err, BadArchive, `"a\u0000b": name contains a NUL byte`)
}

func TestSymlinkRules(t *testing.T) {
	refused := []struct {
		link, target, prefix string
	}{
		{"root", "/", "root: symlink target / leaves the destination"},
		{"link", "/etc", "link: symlink target /etc leaves the destination"},
		{"a", "../../x", "a: symlink target ../../x leaves the destination"},
		{"sub/a", "../../x", "sub/a: symlink target ../../x leaves the destination"},
		{"up", "..", "up: symlink target .. leaves the destination"},
		{"sneaky", "sub/../../x", "sneaky: symlink target sub/../../x leaves the destination"},
		{"empty", "", "empty: symlink has an empty or invalid target"},
	}
	for _, c := range refused {
		t.Run(c.link, func(t *testing.T) {
			refusedCase(t, tarOf(t, dir("sub/"), symlink(c.link, c.target)), BadArchive, c.prefix)
		})
	}

	// Allowed: targets that stay inside; they are stored cleaned.
	dest := filepath.Join(t.TempDir(), "dest")
	_, err := put(dest, tarOf(t,
		dir("d/"),
		symlink("d/y", ".."),        // the root itself
		symlink("d/x", "y/../w"),    // lexically d/w; as written it would climb out through d/y
		symlink("d/top", "../top"),  // into the root
		symlink("dot", "./a//b/"),   // cosmetic cleaning
		symlink("dangling", "nope"), // need not exist
	))
	if err != nil {
		t.Fatal(err)
	}
	for link, want := range map[string]string{"d/y": "..", "d/x": "w", "d/top": "../top", "dot": "a/b", "dangling": "nope"} {
		if got, err := os.Readlink(filepath.Join(dest, link)); err != nil || got != want {
			t.Errorf("%s -> %q (%v), want %q", link, got, err, want)
		}
	}
}

func TestNothingThroughSymlinks(t *testing.T) {
	t.Run("inside", func(t *testing.T) {
		refusedCase(t, tarOf(t, dir("real/"), symlink("evil", "real"), file("evil/x", "x")),
			BadArchive, "evil/x: written through symlink evil")
	})
	t.Run("inside, directory entry", func(t *testing.T) {
		refusedCase(t, tarOf(t, symlink("evil", "."), dir("evil/d/")),
			BadArchive, "evil/d: written through symlink evil")
	})
	t.Run("inside, hardlink", func(t *testing.T) {
		refusedCase(t, tarOf(t, file("f", "f"), symlink("evil", "."), hardlink("evil/h", "f")),
			BadArchive, "evil/h: written through symlink evil")
	})
	t.Run("deeper", func(t *testing.T) {
		refusedCase(t, tarOf(t, dir("a/"), symlink("a/evil", ".."), file("a/evil/b/x", "x")),
			BadArchive, "a/evil/b/x: written through symlink a/evil")
	})
	t.Run("outside", func(t *testing.T) {
		// The symlink itself is refused, before anything can be
		// written through it; nothing appears outside.
		base, dest := existingDest(t)
		outside := filepath.Join(base, "outside")
		mustMkdir(t, outside)
		_, err := put(dest, tarOf(t, symlink("evil", "../outside"), file("evil/x", "x")))
		wantErr(t, err, BadArchive, "evil: symlink target ../outside leaves the destination")
		if _, err := os.Lstat(filepath.Join(outside, "x")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatal("a file was written outside dest")
		}
		noStaging(t, base, dest)
	})
	t.Run("beneath a file", func(t *testing.T) {
		refusedCase(t, tarOf(t, file("f", "f"), file("f/x", "x")), BadArchive, "f/x: beneath regular file f")
	})
}

func TestHardlinkRules(t *testing.T) {
	cases := []struct {
		desc    string
		archive []ent
		prefix  string
	}{
		{"host file", []ent{hardlink("hard", "/etc/passwd")}, "hard: hardlink target /etc/passwd is not a file of this archive"},
		{"relative escape", []ent{hardlink("hard", "../outside")}, "hard: hardlink target ../outside is not a file of this archive"},
		{"later entry", []ent{hardlink("hard", "f"), file("f", "f")}, "hard: hardlink target f is not a file of this archive"},
		{"directory", []ent{dir("d/"), hardlink("hard", "d")}, "hard: hardlink target d is not a file of this archive"},
		{"symlink", []ent{file("f", "f"), symlink("s", "f"), hardlink("hard", "s")}, "hard: hardlink target s is not a file of this archive"},
		// The hardlink target must be in the archive even when dest
		// has a file of that name.
		{"dest file", []ent{hardlink("hard", "keep.txt")}, "hard: hardlink target keep.txt is not a file of this archive"},
	}
	for _, c := range cases {
		t.Run(c.desc, func(t *testing.T) {
			refusedCase(t, tarOf(t, c.archive...), BadArchive, c.prefix)
		})
	}
	dest := filepath.Join(t.TempDir(), "dest")
	if _, err := put(dest, tarOf(t, file("sub/f", "data"), hardlink("g", "sub/f"), hardlink("sub/f", "sub/f"))); err != nil {
		t.Fatal(err)
	}
	a, _ := os.Stat(filepath.Join(dest, "sub/f"))
	b, _ := os.Stat(filepath.Join(dest, "g"))
	if a == nil || b == nil || !os.SameFile(a, b) || mustRead(t, filepath.Join(dest, "g")) != "data" {
		t.Fatal("hardlink to an earlier entry not created")
	}
}

func TestSpecialFilesRefused(t *testing.T) {
	cases := []struct {
		e      ent
		prefix string
	}{
		{special("dev/null", tar.TypeChar), "dev/null: device nodes are not allowed"},
		{special("dev/sda", tar.TypeBlock), "dev/sda: device nodes are not allowed"},
		{special("fifo", tar.TypeFifo), "fifo: FIFOs are not allowed"},
		{special("dump", 'D'), `dump: entries of type "D" are not allowed`},
		{special("sparse", tar.TypeGNUSparse), "not a valid tar archive"}, // archive/tar refuses it without a sparse map
	}
	for _, c := range cases {
		t.Run(c.e.name, func(t *testing.T) {
			refusedCase(t, tarOf(t, file("a.txt", "new"), c.e), BadArchive, c.prefix)
		})
	}
}

func TestModesKeepOnlyPermissionBits(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "dest")
	suid := file("suid", "x")
	suid.mode = 0o4755
	sgid := file("sgid", "x")
	sgid.mode = 0o2750
	sticky := dir("tmp/")
	sticky.mode = 0o1777
	odd := file("odd", "x")
	odd.mode = 0o170604 // type bits in the mode field
	if _, err := put(dest, tarOf(t, suid, sgid, sticky, odd)); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]fs.FileMode{"suid": 0o755, "sgid": 0o750, "tmp": fs.ModeDir | 0o777, "odd": 0o604} {
		fi, err := os.Lstat(filepath.Join(dest, rel))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), want)
		}
	}
}

func TestLimits(t *testing.T) {
	four := tarOf(t, dir("./"), file("a", "12345"), file("b", "12345"), dir("c/"), file("c/d", ""))
	cases := []struct {
		maxBytes, maxEntries int64
		kind                 Kind
		prefix               string
	}{
		{10, 4, 0, ""}, // exactly at both caps ("./" is not counted)
		{10, 3, TooLarge, "more than 3 entries"},
		{9, 4, TooLarge, "more than 9 bytes of file data"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%d/%d", c.maxBytes, c.maxEntries), func(t *testing.T) {
			base, dest := existingDest(t)
			before := snapshot(t, base)
			r := req(dest)
			r.MaxBytes, r.MaxEntries = c.maxBytes, c.maxEntries
			st, err := Put(bytes.NewReader(four), r)
			noStaging(t, base, dest)
			if c.kind == 0 {
				if err != nil || st.Bytes != 10 || st.Files != 3 || st.Dirs != 1 {
					t.Fatalf("%+v %v", st, err)
				}
				return
			}
			wantErr(t, err, c.kind, c.prefix)
			sameTree(t, "base", before, snapshot(t, base))
		})
	}
	// The byte cap is checked before the data is written: a huge
	// declared size is refused at once, without reading it.
	hdr := tarOf(t, file("huge", strings.Repeat("x", 4096)))[:1024]
	r := req(filepath.Join(t.TempDir(), "dest"))
	r.MaxBytes = 4095
	_, err := Put(bytes.NewReader(hdr), r)
	wantErr(t, err, TooLarge, "more than 4095 bytes")
}

func TestDuplicatePaths(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "dest")
	d2 := dir("d/")
	d2.mode = 0o700
	_, err := put(dest, tarOf(t,
		file("f", "first"), file("f", "second"), // file replaces file
		symlink("s", "f"), file("s", "now a file"), // file replaces symlink
		file("l", "x"), symlink("l", "f"), // symlink replaces file
		file("x", "x"), dir("x/"), file("x/in", "in"), // directory replaces file
		dir("d/"), file("d/keep", "k"), d2, // directory again: mode only
	))
	if err != nil {
		t.Fatal(err)
	}
	if mustRead(t, filepath.Join(dest, "f")) != "second" || mustRead(t, filepath.Join(dest, "s")) != "now a file" ||
		mustRead(t, filepath.Join(dest, "x/in")) != "in" || mustRead(t, filepath.Join(dest, "d/keep")) != "k" {
		t.Fatal("wrong contents")
	}
	if fi, _ := os.Lstat(filepath.Join(dest, "s")); !fi.Mode().IsRegular() {
		t.Fatal("s is not a regular file")
	}
	if target, err := os.Readlink(filepath.Join(dest, "l")); err != nil || target != "f" {
		t.Fatalf("l -> %q %v", target, err)
	}
	if fi, _ := os.Lstat(filepath.Join(dest, "d")); fi.Mode().Perm() != 0o700 {
		t.Fatalf("d mode %v", fi.Mode())
	}
	// A file, symlink or link may not replace a directory of the archive.
	for _, e := range []ent{file("d", "x"), symlink("d", "x"), hardlink("d", "f")} {
		refusedCase(t, tarOf(t, file("f", "f"), dir("d/"), e), BadArchive, "d: replaces a directory of this archive")
	}
}

// ---- the stream -----------------------------------------------------------

func TestTruncatedArchive(t *testing.T) {
	full := tarOf(t, file("a.txt", "new a"), file("b", strings.Repeat("b", 3000)), file("c", "c"))
	if len(full) != 6656 {
		t.Fatalf("archive is %d bytes; the offsets below assume 6656", len(full))
	}
	// Offsets: 0 header a, 512 data a, 1024 header b, 1536 data b (3000
	// bytes, to 4608 with padding), 4608 header c, 5120 data c, 5632 end.
	cuts := map[string]int{
		"in a header":                   1024 + 100,
		"in file data":                  2000,
		"at an entry boundary":          4608,
		"after the last entry":          5632,
		"after one of two zero blocks":  5632 + 512,
		"one byte short of the end":     5632 + 1023,
		"in the padding after the data": 5120 + 10,
	}
	for what, n := range cuts {
		t.Run(what, func(t *testing.T) {
			refusedCase(t, full[:n], BadArchive, "")
			base, dest := existingDest(t)
			_, err := put(dest, full[:n])
			if !strings.Contains(err.Error(), "truncated") {
				t.Fatalf("message %q does not say truncated", err)
			}
			noStaging(t, base, dest)
		})
	}
	// A complete archive, however it is padded, is fine.
	for _, pad := range []int{0, 512, 10240 - len(full)%10240} {
		dest := filepath.Join(t.TempDir(), "dest")
		if _, err := put(dest, append(append([]byte{}, full...), make([]byte, pad)...)); err != nil {
			t.Fatalf("pad %d: %v", pad, err)
		}
	}
	// Anything else after the end is refused.
	trailing := append(append([]byte{}, full...), tarOf(t, file("more", "x"))...)
	refusedCase(t, trailing, BadArchive, "data after the end-of-archive marker")
	refusedCase(t, []byte(strings.Repeat("not a tar archive ", 100)), BadArchive, "not a valid tar archive")
}

// errReader yields data, then fails like a session that ended.
type errReader struct {
	data []byte
	err  error
}

func (r *errReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestAbortedStream(t *testing.T) {
	full := tarOf(t, file("a.txt", "new a"), file("b", strings.Repeat("b", 3000)))
	ended := errors.New("session ended")
	for _, n := range []int{0, 700, 2000, len(full)} { // the last: the end marker arrived, put_tar_end did not
		base, dest := existingDest(t)
		before := snapshot(t, base)
		_, err := Put(&errReader{data: full[:n], err: ended}, req(dest))
		wantErr(t, err, Aborted, "reading the archive: session ended")
		if !errors.Is(err, ended) {
			t.Fatalf("cause lost: %v", err)
		}
		sameTree(t, "base", before, snapshot(t, base))
		noStaging(t, base, dest)
	}
}

func TestStagingPlacement(t *testing.T) {
	for _, exists := range []bool{true, false} {
		t.Run(fmt.Sprint("dest exists: ", exists), func(t *testing.T) {
			base := t.TempDir()
			dest := filepath.Join(base, "dest")
			if exists {
				mustMkdir(t, dest)
			}
			archive := tarOf(t, file("a", "a"), file("b", "b"))
			pr, pw := io.Pipe()
			done := make(chan error, 1)
			go func() {
				_, err := Put(pr, req(dest))
				done <- err
			}()
			if _, err := pw.Write(archive[:1024]); err != nil { // a, complete
				t.Fatal(err)
			}
			// The next write blocks until a has been read in full,
			// so a is in staging by now.
			if _, err := pw.Write(archive[1024:1536]); err != nil {
				t.Fatal(err)
			}
			where := base
			if exists {
				where = dest
			}
			found, _ := filepath.Glob(filepath.Join(where, StagingPrefix+"*"))
			if len(found) != 1 {
				t.Fatalf("want one staging dir in %s, found %v", where, found)
			}
			fi, err := os.Lstat(found[0])
			if err != nil || fi.Mode() != fs.ModeDir|0o700 {
				t.Fatalf("staging %v %v", fi, err)
			}
			if _, err := os.Lstat(filepath.Join(dest, "a")); !errors.Is(err, fs.ErrNotExist) {
				t.Fatal("a reached dest before the archive was complete")
			}
			if _, err := pw.Write(archive[1536:]); err != nil {
				t.Fatal(err)
			}
			pw.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if mustRead(t, filepath.Join(dest, "a"))+mustRead(t, filepath.Join(dest, "b")) != "ab" {
				t.Fatal("files missing")
			}
			noStaging(t, base, dest)
		})
	}
}

// The staging directory sits inside an existing dest; an entry of its name
// would make the merge move it into itself. Its name is random, so the
// archive is written while it is read, after the name is known.
func TestStagingNameIsReserved(t *testing.T) {
	base, dest := existingDest(t)
	before := snapshot(t, base)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := Put(pr, req(dest))
		pr.CloseWithError(errors.New("put is over")) // unblock the writer below
		done <- err
	}()
	tw := tar.NewWriter(pw)
	if err := tw.WriteHeader(&tar.Header{Name: "a", Typeflag: tar.TypeReg, Mode: 0o644, Size: 1}); err != nil {
		t.Fatal(err)
	}
	found, _ := filepath.Glob(filepath.Join(dest, StagingPrefix+"*"))
	if len(found) != 1 {
		t.Fatalf("staging dirs in dest: %v", found)
	}
	name := filepath.Base(found[0])
	// Errors from here on are the refusal closing the pipe.
	_, _ = tw.Write([]byte("a"))
	_ = tw.WriteHeader(&tar.Header{Name: name + "/x", Typeflag: tar.TypeReg, Mode: 0o644})
	_ = tw.Close()
	pw.Close()
	wantErr(t, <-done, BadArchive, name+"/x: the name is reserved")
	sameTree(t, "base", before, snapshot(t, base))
	noStaging(t, base, dest)
}

// ---- dest and the merge -----------------------------------------------------

func TestCheckDest(t *testing.T) {
	for _, d := range []string{"/", "/workspace", "/a/b c/d"} {
		if err := CheckDest(d); err != nil {
			t.Errorf("%q: %v", d, err)
		}
	}
	for _, d := range []string{"", "workspace", "./a", "/a/", "/a//b", "//a", "/a/../b", "/a/./b", "/a/..", "/a\x00b"} {
		err := CheckDest(d)
		wantErr(t, err, BadRequest, "dest")
	}
}

func TestDestValidation(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	mustMkdir(t, real)
	if err := os.Symlink(real, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, filepath.Join(base, "file"), "f")
	archive := tarOf(t, file("x", "x"))
	cases := map[string]string{
		filepath.Join(base, "link"):           "dest: " + filepath.Join(base, "link") + " is a symlink",
		filepath.Join(base, "link", "sub"):    "dest: " + filepath.Join(base, "link") + " is a symlink",
		filepath.Join(base, "file"):           "dest: " + filepath.Join(base, "file") + " exists and is not a directory",
		filepath.Join(base, "file", "sub"):    "dest: " + filepath.Join(base, "file") + " exists and is not a directory",
		"relative/dest":                       "dest",
		filepath.Join(base, "real") + "/../x": "dest",
		filepath.Join(base, "real") + "/":     "dest",
		base + "/new/../new":                  "dest",
	}
	before := snapshot(t, base)
	for d, prefix := range cases {
		_, err := put(d, archive)
		wantErr(t, err, BadRequest, prefix)
	}
	sameTree(t, "base", before, snapshot(t, base))
	r := req(filepath.Join(base, "dest"))
	r.MaxEntries = 0
	_, err := Put(bytes.NewReader(archive), r)
	wantErr(t, err, BadRequest, "max_bytes and max_entries")
}

func TestFailureRemovesCreatedParents(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "p", "q", "dest")
	_, err := put(dest, tarOf(t, file("ok", "ok"), special("dev/null", tar.TypeChar)))
	wantErr(t, err, BadArchive, "dev/null:")
	if _, err := os.Lstat(filepath.Join(base, "p")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("created parents were left behind")
	}
}

func TestFailureMidArchiveLeavesDestUnchanged(t *testing.T) {
	base, dest := existingDest(t)
	before := snapshot(t, base)
	_, err := put(dest, tarOf(t,
		file("a.txt", "replaced"),       // overlaps dest
		file("sub/b.txt", "replaced"),   // overlaps dest, in a merged dir
		file("link", "replaces a link"), // overlaps dest
		file("new/file", "new"),
		hardlink("bad", "/etc/passwd"), // the failure, in the middle
		file("after", "never read"),
	))
	wantErr(t, err, BadArchive, "bad: hardlink target /etc/passwd")
	sameTree(t, "base", before, snapshot(t, base))
	noStaging(t, base, dest)
}

func TestMerge(t *testing.T) {
	base, dest := existingDest(t)
	outside := filepath.Join(base, "outside")
	mustMkdir(t, outside)
	mustWrite(t, filepath.Join(outside, "victim"), "untouched")
	outsideBefore := snapshot(t, outside)
	// dest has symlinks leading out, a directory where the archive has a
	// file, a file where it has a directory.
	if err := os.Symlink(outside, filepath.Join(dest, "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "victim"), filepath.Join(dest, "victimlink")); err != nil {
		t.Fatal(err)
	}
	mustMkdir(t, filepath.Join(dest, "wasdir"))
	mustWrite(t, filepath.Join(dest, "wasdir", "old"), "old")
	mustWrite(t, filepath.Join(dest, "wasfile"), "old")
	if err := os.Chmod(filepath.Join(dest, "sub"), 0o711); err != nil {
		t.Fatal(err)
	}
	st, err := put(dest, tarOf(t,
		file("a.txt", "new a"),
		dir("sub/"), // exists: merged into, keeps its mode
		file("sub/c.txt", "new c"),
		dir("out/"), // replaces the symlink, which is not followed
		file("out/victim", "overwritten?"),
		file("victimlink", "new"), // replaces the symlink, not its target
		file("wasdir", "now a file"),
		file("wasfile/inner", "now a dir"),
		symlink("link", "sub/c.txt"),
	))
	if err != nil {
		t.Fatal(err)
	}
	if st.Files != 6 || st.Dirs != 2 || st.Symlinks != 1 {
		t.Fatalf("stats %+v", st)
	}
	sameTree(t, "the symlinks' targets", outsideBefore, snapshot(t, outside))
	for rel, want := range map[string]string{
		"a.txt": "new a", "keep.txt": "keep", "sub/b.txt": "old b", "sub/c.txt": "new c",
		"out/victim": "overwritten?", "victimlink": "new", "wasdir": "now a file", "wasfile/inner": "now a dir", "link": "new c",
	} {
		if got := mustRead(t, filepath.Join(dest, rel)); got != want {
			t.Errorf("%s: %q, want %q", rel, got, want)
		}
	}
	for rel, want := range map[string]fs.FileMode{"out": fs.ModeDir | 0o755, "victimlink": 0o644, "sub": fs.ModeDir | 0o711} {
		if fi, err := os.Lstat(filepath.Join(dest, rel)); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v %v, want mode %v", rel, fi, err, want)
		}
	}
	noStaging(t, base, dest)
}

func TestJoin(t *testing.T) {
	// dest "/" cannot be written to in a test; the merge's path joining
	// for it is what could go wrong.
	if join("/", "a") != "/a" || join("/x", "a") != "/x/a" {
		t.Fatal("join")
	}
}

func TestMergeRollback(t *testing.T) {
	archive := tarOf(t,
		file("a.txt", "new a"),     // rename 1 (park old), 2
		file("link", "not a link"), // 3 (park), 4
		file("new/x", "x"),         // 5
		file("sub/b.txt", "new b"), // 6 (park), 7
		file("zzz", "last"),        // 8
	)
	fail := errors.New("injected")
	for n := 1; n <= 8; n++ {
		t.Run(fmt.Sprint("rename ", n), func(t *testing.T) {
			base, dest := existingDest(t)
			before := snapshot(t, base)
			calls := 0
			osRename = func(from, to string) error {
				calls++
				if calls == n {
					return &os.LinkError{Op: "rename", Old: from, New: to, Err: fail}
				}
				return os.Rename(from, to)
			}
			defer func() { osRename = os.Rename }()
			_, err := put(dest, archive)
			wantErr(t, err, IOError, dest+"/")
			sameTree(t, "base", before, snapshot(t, base))
			noStaging(t, base, dest)
		})
	}
}

func TestFailedRollbackKeepsStaging(t *testing.T) {
	_, dest := existingDest(t)
	calls := 0
	osRename = func(from, to string) error {
		calls++
		if calls >= 3 { // a.txt is replaced, then every rename fails
			return &os.LinkError{Op: "rename", Old: from, New: to, Err: errors.New("injected")}
		}
		return os.Rename(from, to)
	}
	defer func() { osRename = os.Rename }()
	_, err := put(dest, tarOf(t, file("a.txt", "new a"), file("b", "b")))
	wantErr(t, err, IOError, dest+"/b: cannot move into place: injected; rolling back also failed")
	found, _ := filepath.Glob(filepath.Join(dest, StagingPrefix+"*", "old", "1"))
	if len(found) != 1 || mustRead(t, found[0]) != "old a" {
		t.Fatalf("the displaced original is not kept: %v", found)
	}
}

func TestMountPointsUnder(t *testing.T) {
	info := `22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
23 22 0:5 / /dev rw - devtmpfs devtmpfs rw
30 22 0:30 / /mnt/my\040disk rw - ext4 /dev/vdb rw
31 22 0:31 / /mnt/other rw - tmpfs tmpfs rw
32 22 0:32 / /mntx rw - tmpfs tmpfs rw
`
	got := mountPointsUnder(info, "/mnt")
	if strings.Join(got, ",") != "/mnt/my disk,/mnt/other" {
		t.Fatalf("under /mnt: %q", got)
	}
	if got := mountPointsUnder(info, "/dev"); len(got) != 1 || got[0] != "/dev" {
		t.Fatalf("under /dev: %q", got)
	}
	if got := mountPointsUnder(info, "/srv"); len(got) != 0 {
		t.Fatalf("under /srv: %q", got)
	}
}

func TestRemoveTree(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	mustMkdir(t, outside)
	mustWrite(t, filepath.Join(outside, "f"), "keep")
	mustMkdir(t, root)
	mustMkdir(t, filepath.Join(root, "ro"))
	mustWrite(t, filepath.Join(root, "ro", "f"), "x")
	if err := os.Symlink(outside, filepath.Join(root, "ro", "out")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(root, "ro"), 0o500); err != nil {
		t.Fatal(err)
	}
	if err := removeTree(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(root); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("not removed")
	}
	if mustRead(t, filepath.Join(outside, "f")) != "keep" {
		t.Fatal("followed a symlink")
	}
}
