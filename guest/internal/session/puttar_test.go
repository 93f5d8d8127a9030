package session

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type tarEntry struct {
	name, body, link string
	typ              byte
}

func tarBytes(t *testing.T, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: 0o644, ModTime: time.Unix(1_600_000_000, 0)}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
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

func putTarReq(id int64, dest string) map[string]any {
	return map[string]any{"type": "put_tar", "id": id, "dest": dest, "max_bytes": 1 << 20, "max_entries": 100}
}

// sendTar sends an archive as put_tar + put_tar_data frames of chunk bytes
// (the first frame carries the first chunk), and put_tar_end if end.
func (c *client) sendTar(req map[string]any, archive []byte, chunk int, end bool) {
	c.t.Helper()
	id := req["id"]
	first := true
	for first || len(archive) > 0 {
		n := chunk
		if n > len(archive) {
			n = len(archive)
		}
		if first {
			c.send(req, archive[:n])
			first = false
		} else {
			c.send(map[string]any{"type": "put_tar_data", "id": id}, archive[:n])
		}
		archive = archive[n:]
	}
	if end {
		c.send(map[string]any{"type": "put_tar_end", "id": id}, nil)
	}
}

// expectPing proves that nothing else was queued before a ping's reply
// (frames of one session are written in order).
func (c *client) expectPing(id int64) {
	c.t.Helper()
	c.send(map[string]any{"type": "ping", "id": id}, nil)
	c.expect("ok", id)
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitNoStaging waits until no staging directory is left in dir: an
// aborted transfer cleans up in its own goroutine, without a reply.
func waitNoStaging(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		left, _ := filepath.Glob(filepath.Join(dir, ".pyro-staging-*"))
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("staging left behind: %v", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPutTar(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "dest")
	big := strings.Repeat("pyro", 50_000)
	archive := tarBytes(t,
		tarEntry{name: "dir/", typ: tar.TypeDir},
		tarEntry{name: "dir/big", body: big, typ: tar.TypeReg},
		tarEntry{name: "hello.txt", body: "hello\n", typ: tar.TypeReg},
		tarEntry{name: "link", link: "hello.txt", typ: tar.TypeSymlink},
	)
	c := newClient(t, Options{})
	c.hello(1, "n")
	c.sendTar(putTarReq(2, dest), archive, 7777, true) // chunks cut headers anywhere
	m := c.expect("ok", 2)
	if m.num("files") != 2 || m.num("dirs") != 1 || m.num("symlinks") != 1 || m.num("bytes") != int64(len(big)+6) {
		t.Fatalf("reply %v", m)
	}
	if readFile(t, filepath.Join(dest, "dir/big")) != big || readFile(t, filepath.Join(dest, "link")) != "hello\n" {
		t.Fatal("wrong contents")
	}
	// An empty first chunk, the archive in one data frame.
	c.send(putTarReq(3, dest), nil)
	c.send(map[string]any{"type": "put_tar_data", "id": 3}, tarBytes(t, tarEntry{name: "hello.txt", body: "again", typ: tar.TypeReg}))
	c.send(map[string]any{"type": "put_tar_end", "id": 3}, nil)
	c.expect("ok", 3)
	if readFile(t, filepath.Join(dest, "hello.txt")) != "again" {
		t.Fatal("not replaced")
	}
	// Answered means over: more data for the id is a bad request.
	c.send(map[string]any{"type": "put_tar_data", "id": 3}, []byte("late"))
	if m := c.expect("error", 3); m.str("code") != "bad_request" {
		t.Fatal(m)
	}
	// The id is free again once answered.
	c.sendTar(putTarReq(2, dest), tarBytes(t), 100, true)
	c.expect("ok", 2)
	c.expectPing(4)
}

func TestPutTarRefusedArchive(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dest, "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, Options{})
	c.hello(1, "n")
	// The bad entry comes first; the data behind it keeps coming, and
	// everything after the error reply is ignored.
	archive := tarBytes(t,
		tarEntry{name: "keep", body: "overwritten", typ: tar.TypeReg},
		tarEntry{name: "../escape", body: "x", typ: tar.TypeReg},
		tarEntry{name: "pad", body: strings.Repeat("x", 100_000), typ: tar.TypeReg},
	)
	c.sendTar(putTarReq(2, dest), archive, 1000, true)
	m := c.expect("error", 2)
	if m.str("code") != "bad_archive" || m.str("message") != "../escape: path leaves the destination" {
		t.Fatalf("reply %v", m)
	}
	c.expectPing(3)
	if readFile(t, filepath.Join(dest, "keep")) != "keep" {
		t.Fatal("dest changed")
	}
	if _, err := os.Lstat(filepath.Join(base, "escape")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("escaped")
	}
	waitNoStaging(t, dest)

	// too_large, and a data frame after the end of the id's exchange
	// (which is unknown again) is a bad request.
	r := putTarReq(4, dest)
	r["max_entries"] = 1
	c.sendTar(r, tarBytes(t, tarEntry{name: "a", typ: tar.TypeReg}, tarEntry{name: "b", typ: tar.TypeReg}), 512, true)
	if m := c.expect("error", 4); m.str("code") != "too_large" || m.str("message") != "more than 1 entries" {
		t.Fatalf("reply %v", m)
	}
	c.send(map[string]any{"type": "put_tar_data", "id": 4}, []byte("late"))
	if m := c.expect("error", 4); m.str("code") != "bad_request" {
		t.Fatalf("reply %v", m)
	}
	c.expectPing(5)
}

func TestPutTarBadRequests(t *testing.T) {
	base := t.TempDir()
	if err := os.Symlink(base, filepath.Join(base, "link")); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, Options{})
	// No session yet.
	c.send(putTarReq(1, filepath.Join(base, "x")), nil)
	if m := c.expect("error", 1); m.str("code") != "bad_request" {
		t.Fatal(m)
	}
	c.hello(2, "n")
	archive := tarBytes(t, tarEntry{name: "f", body: "f", typ: tar.TypeReg})
	bad := []map[string]any{
		{"type": "put_tar", "id": 10, "max_bytes": 100, "max_entries": 10},
		{"type": "put_tar", "id": 11, "dest": "relative", "max_bytes": 100, "max_entries": 10},
		{"type": "put_tar", "id": 12, "dest": base + "/a/../b", "max_bytes": 100, "max_entries": 10},
		{"type": "put_tar", "id": 13, "dest": base + "/", "max_bytes": 100, "max_entries": 10},
		{"type": "put_tar", "id": 14, "dest": base, "max_bytes": 0, "max_entries": 10},
		{"type": "put_tar", "id": 15, "dest": base, "max_bytes": 100},
		{"type": "put_tar", "id": 16, "dest": base, "max_bytes": 1.5, "max_entries": 10},
		{"type": "put_tar", "id": 17, "dest": 7, "max_bytes": 100, "max_entries": 10},
		// Only the filesystem can tell this one.
		{"type": "put_tar", "id": 18, "dest": base + "/link/x", "max_bytes": 100, "max_entries": 10},
	}
	for _, req := range bad {
		id := int64(req["id"].(int))
		// The data behind a refused request is dropped, not answered.
		c.sendTar(req, archive, 600, true)
		if m := c.expect("error", id); m.str("code") != "bad_request" {
			t.Errorf("%v: got %v", req, m)
		}
	}
	c.expectPing(19)
	if _, err := os.Lstat(filepath.Join(base, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("written through the symlink")
	}
	// Data and end for ids that never had a put_tar.
	c.send(map[string]any{"type": "put_tar_data", "id": 20}, []byte("x"))
	c.expect("error", 20)
	c.send(map[string]any{"type": "put_tar_end", "id": 21}, nil)
	c.expect("error", 21)
	// A second put_tar for an id in progress is refused; the first goes on.
	dest := filepath.Join(base, "dest")
	c.send(putTarReq(22, dest), archive[:100])
	c.send(putTarReq(22, dest), nil)
	if m := c.expect("error", 22); m.str("code") != "bad_request" || !strings.Contains(m.str("message"), "in progress") {
		t.Fatal(m)
	}
	c.send(map[string]any{"type": "put_tar_data", "id": 22}, archive[100:])
	c.send(map[string]any{"type": "put_tar_end", "id": 22}, nil)
	c.expect("ok", 22)
	if readFile(t, filepath.Join(dest, "f")) != "f" {
		t.Fatal("first transfer lost")
	}
}

func TestPutTarTruncated(t *testing.T) {
	base := t.TempDir()
	dest := filepath.Join(base, "dest")
	archive := tarBytes(t,
		tarEntry{name: "a", body: "a", typ: tar.TypeReg},
		tarEntry{name: "b", body: strings.Repeat("b", 5000), typ: tar.TypeReg},
	)
	c := newClient(t, Options{})
	c.hello(1, "n")
	for i, cut := range []int{1024, 3000, len(archive) - 1024} { // entry boundary, mid-data, no end marker
		id := int64(10 + i)
		c.sendTar(putTarReq(id, dest), archive[:cut], 512, true)
		m := c.expect("error", id)
		if m.str("code") != "bad_archive" || !strings.Contains(m.str("message"), "truncated") {
			t.Fatalf("cut %d: %v", cut, m)
		}
	}
	if _, err := os.Lstat(dest); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("dest was created")
	}
	waitNoStaging(t, base)
}

func TestPutTarConcurrent(t *testing.T) {
	base := t.TempDir()
	c := newClient(t, Options{})
	c.hello(1, "n")
	ids := []int64{2, 3, 4}
	archives := map[int64][]byte{}
	for _, id := range ids {
		archives[id] = tarBytes(t, tarEntry{name: "f", body: strings.Repeat(string(rune('a'+id)), 40_000), typ: tar.TypeReg})
		c.send(putTarReq(id, filepath.Join(base, string(rune('a'+id)))), archives[id][:1000])
	}
	// Interleaved chunks.
	for off := 1000; off < len(archives[2]); off += 1000 {
		for _, id := range ids {
			end := off + 1000
			if end > len(archives[id]) {
				end = len(archives[id])
			}
			c.send(map[string]any{"type": "put_tar_data", "id": id}, archives[id][off:end])
		}
	}
	for _, id := range ids {
		c.send(map[string]any{"type": "put_tar_end", "id": id}, nil)
	}
	got := map[int64]bool{}
	for range ids {
		m := c.next()
		if m.typ() != "ok" || got[m.id()] {
			t.Fatalf("unexpected %v", m)
		}
		got[m.id()] = true
	}
	for _, id := range ids {
		if readFile(t, filepath.Join(base, string(rune('a'+id)), "f")) != strings.Repeat(string(rune('a'+id)), 40_000) {
			t.Errorf("transfer %d: wrong contents", id)
		}
	}
}

// A transfer cut off by the end of its session (a new hello, or EOF) must
// leave dest as it was and remove its staging directory.
func TestPutTarAbortedBySessionEnd(t *testing.T) {
	archive := tarBytes(t,
		tarEntry{name: "keep", body: "overwritten", typ: tar.TypeReg},
		tarEntry{name: "new", body: strings.Repeat("n", 10_000), typ: tar.TypeReg},
	)
	setup := func(t *testing.T) string {
		dest := filepath.Join(t.TempDir(), "dest")
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dest, "keep"), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
		return dest
	}
	check := func(t *testing.T, dest string) {
		waitNoStaging(t, dest)
		names, _ := os.ReadDir(dest)
		if len(names) != 1 || readFile(t, filepath.Join(dest, "keep")) != "keep" {
			t.Fatalf("dest changed: %v", names)
		}
	}
	t.Run("new hello", func(t *testing.T) {
		dest := setup(t)
		c := newClient(t, Options{})
		c.hello(1, "first")
		// Everything but put_tar_end: the archive is complete, but the
		// host never said so.
		c.sendTar(putTarReq(2, dest), archive, 4096, false)
		c.hello(3, "second")
		check(t, dest)
		// The old id means nothing in the new session.
		c.send(map[string]any{"type": "put_tar_end", "id": 2}, nil)
		c.expect("error", 2)
		c.expectPing(4)
		check(t, dest)
	})
	t.Run("EOF", func(t *testing.T) {
		dest := setup(t)
		c := newClient(t, Options{})
		c.hello(1, "first")
		c.sendTar(putTarReq(2, dest), archive[:3000], 1000, false)
		c.expectPing(3) // the chunks have been fed
		c.conn.Close()
		check(t, dest)
	})
}
