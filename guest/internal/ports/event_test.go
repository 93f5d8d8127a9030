package ports

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"pyro/guest/internal/protocol"
	"pyro/guest/internal/reaper"
	"pyro/guest/internal/session"
)

// lockedBuffer collects what the agent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// replies decodes everything written so far as "type/id" strings.
func (b *lockedBuffer) replies() []string {
	b.mu.Lock()
	out := append([]byte(nil), b.buf.Bytes()...)
	b.mu.Unlock()
	return decodeReplies(out)
}

// decodeReplies decodes the agent's frames in out as "type/id" strings.
func decodeReplies(out []byte) []string {
	var got []string
	d := protocol.NewDecoder(bytes.NewReader(out))
	for {
		f, err := d.Next()
		if err != nil {
			return got
		}
		typ, id, _ := protocol.ParseEnvelope(f.Header)
		got = append(got, fmt.Sprintf("%s/%d", typ, id))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A FIFO's read end behaves like a virtio port for reading: it reads 0 at
// once while no writer (host) has it open, and is woken when one opens it,
// writes, or closes it. Served by events, many hosts in a row each get
// their hello answered, half a frame left by one never swallows the next
// one's hello, and while no host is there the port is not read at all.
func TestEventReaderServesHostsInARowWithoutPolling(t *testing.T) {
	path := filepath.Join(t.TempDir(), "port")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	in := os.NewFile(uintptr(fd), path)
	events := newEventReader(in)
	if events == nil {
		t.Fatal("a non-blocking FIFO is not served by events")
	}
	out := &lockedBuffer{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		serve(events, out, session.Options{Reaper: reaper.Start(), BootID: func() string { return "" }, Logf: func(string, ...any) {}}, time.Millisecond, stop)
		close(done)
	}()
	defer func() {
		close(stop)
		in.Close() // the waiting read fails, and serve sees stop
		<-done
	}()

	want := []string{}
	// A host connects, writes, waits for its replies (a session's replies
	// are dropped once it ends) and goes.
	// Each waits for the agent to see it go, as the next one would
	// otherwise open the FIFO before that (a port has no such overlap).
	host := func(data []byte, replies ...string) {
		eofs := events.eofs.Load()
		w, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		want = append(want, replies...)
		waitFor(t, fmt.Sprint(replies), func() bool { return len(out.replies()) >= len(want) })
		w.Close()
		waitFor(t, "the end of the connection", func() bool { return events.eofs.Load() > eofs })
	}
	for i := 1; i <= 20; i++ {
		if i%5 == 0 {
			// This host leaves half a frame promising 1000 payload bytes.
			host(frame(t, map[string]any{"type": "ping", "id": 999}, make([]byte, 1000))[:100])
		}
		hello := frame(t, map[string]any{"type": "hello", "id": i, "nonce": "n"}, nil)
		ping := frame(t, map[string]any{"type": "ping", "id": 1000 + i}, nil)
		host(append(hello, ping...), fmt.Sprintf("hello_ok/%d", i), fmt.Sprintf("ok/%d", 1000+i))
	}
	if got := out.replies(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replies %v, want %v", got, want)
	}
	// The last host is gone; once its EOF is read, nothing reads the port
	// until a host comes again.
	time.Sleep(50 * time.Millisecond)
	before := events.reads.Load()
	time.Sleep(300 * time.Millisecond)
	if after := events.reads.Load(); after != before {
		t.Fatalf("the port was read %d times with no host", after-before)
	}
	host(frame(t, map[string]any{"type": "hello", "id": 77, "nonce": "n"}, nil), "hello_ok/77")
	if got := out.replies(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("replies %v, want %v", got, want)
	}
}

// A blocking fd would sit in read(2) instead of reporting EAGAIN, so it is
// left to the timer loop.
func TestEventReaderOnlyForNonBlockingDevices(t *testing.T) {
	path := filepath.Join(t.TempDir(), "port")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Open(path, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if newEventReader(f) != nil {
		t.Fatal("a blocking FIFO was taken for event waiting")
	}
	regular, err := os.Create(filepath.Join(t.TempDir(), "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	if newEventReader(regular) != nil {
		t.Fatal("a regular file was taken for event waiting")
	}
}
