package outbuf

import (
	"bytes"
	"math/rand"
	"testing"
	"time"
)

func TestSmallWritesAndReads(t *testing.T) {
	b := New(16)
	b.Write([]byte("hello "))
	b.Write([]byte("world"))
	start, data, st := b.ReadAt(0, 100)
	if start != 0 || string(data) != "hello world" || st.Start != 0 || st.End != 11 {
		t.Fatalf("got %d %q %+v", start, data, st)
	}
	if start, data, _ := b.ReadAt(6, 3); start != 6 || string(data) != "wor" {
		t.Fatalf("got %d %q", start, data)
	}
	// A cursor beyond the end counts as the end.
	if start, data, _ := b.ReadAt(50, 10); start != 11 || len(data) != 0 {
		t.Fatalf("got %d %q", start, data)
	}
}

func TestWrapKeepsNewest(t *testing.T) {
	b := New(8)
	b.Write([]byte("abcdef"))
	b.Write([]byte("ghij")) // drops "ab"
	start, data, st := b.ReadAt(0, 100)
	if start != 2 || string(data) != "cdefghij" || st.Start != 2 || st.End != 10 {
		t.Fatalf("got %d %q %+v", start, data, st)
	}
	b.Write([]byte("k"))
	if _, data, _ := b.ReadAt(5, 100); string(data) != "fghijk" {
		t.Fatalf("got %q", data)
	}
	// A write larger than the buffer keeps only its tail.
	b.Write([]byte("0123456789XYZ"))
	start, data, st = b.ReadAt(0, 100)
	if start != 16 || string(data) != "56789XYZ" || st.End != 24 {
		t.Fatalf("got %d %q %+v", start, data, st)
	}
}

// Random writes against a reference model: the buffer always holds the
// last capacity bytes of everything written.
func TestAgainstModel(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	const capacity = 10000
	b := New(capacity)
	var all []byte
	for i := 0; i < 2000; i++ {
		n := rng.Intn(3000)
		if i%100 == 0 {
			n = rng.Intn(25000)
		}
		p := make([]byte, n)
		rng.Read(p)
		b.Write(p)
		all = append(all, p...)
		want := all
		if len(want) > capacity {
			want = want[len(want)-capacity:]
		}
		got, st := b.Snapshot()
		if !bytes.Equal(got, want) || st.End != int64(len(all)) || st.Start != int64(len(all)-len(want)) {
			t.Fatalf("step %d: mismatch (len %d vs %d, %+v)", i, len(got), len(want), st)
		}
		off := int64(rng.Intn(len(all) + 1))
		start, data, _ := b.ReadAt(off, 777)
		if start < st.Start || start > st.End {
			t.Fatalf("start %d outside [%d,%d]", start, st.Start, st.End)
		}
		if !bytes.Equal(data, all[start:start+int64(len(data))]) || (len(data) < 777 && start+int64(len(data)) != st.End) {
			t.Fatalf("step %d: ReadAt(%d) wrong", i, off)
		}
	}
}

func TestGrowsLazily(t *testing.T) {
	b := New(1 << 20)
	b.Write([]byte("x"))
	if len(b.buf) > minAlloc {
		t.Fatalf("allocated %d bytes for one", len(b.buf))
	}
}

func TestChangedAndLastWrite(t *testing.T) {
	b := New(100)
	before := b.Stats().LastWrite
	ch := b.Changed()
	select {
	case <-ch:
		t.Fatal("closed before a write")
	default:
	}
	time.Sleep(5 * time.Millisecond)
	b.Write([]byte("a"))
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("not closed by a write")
	}
	if !b.Stats().LastWrite.After(before) {
		t.Fatal("last write time not updated")
	}
}

func TestTailLines(t *testing.T) {
	cases := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 1, "c\n"},
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc\n", 3, "a\nb\nc\n"},
		{"a\nb\nc\n", 9, "a\nb\nc\n"},
		{"a\nb\nc", 1, "c"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\nc\n", 0, ""},
		{"", 3, ""},
		{"\n\n", 1, "\n"},
		{"only", 1, "only"},
	}
	for _, c := range cases {
		if got := string(TailLines([]byte(c.in), c.n)); got != c.want {
			t.Errorf("TailLines(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
}
