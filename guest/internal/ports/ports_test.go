package ports

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"pyro/guest/internal/protocol"
	"pyro/guest/internal/reaper"
	"pyro/guest/internal/session"
)

func TestScan(t *testing.T) {
	root := t.TempDir()
	sys, dev := filepath.Join(root, "sys"), filepath.Join(root, "dev")
	ports := map[string]string{
		"vport0p1": "org.pyro.agent.1\n",
		"vport0p2": "org.pyro.agent.0\n",
		"vport0p3": "org.qemu.guest_agent.0\n",
		"vport0p4": "org.pyro.agent.x\n",
		"vport0p5": "org.pyro.agent.3\n", // no device node yet
	}
	for dir, name := range ports {
		d := filepath.Join(sys, "class", "virtio-ports", dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "name"), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(dev, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"vport0p1", "vport0p2", "vport0p3", "vport0p4"} {
		if err := os.WriteFile(filepath.Join(dev, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got := Finder{SysRoot: sys, DevRoot: dev}.Scan()
	want := []Port{
		{Name: "org.pyro.agent.0", Path: filepath.Join(dev, "vport0p2")},
		{Name: "org.pyro.agent.1", Path: filepath.Join(dev, "vport0p1")},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := (Finder{SysRoot: filepath.Join(root, "none"), DevRoot: dev}).Wait(50 * time.Millisecond); err == nil {
		t.Fatal("Wait without ports succeeded")
	}
}

// fakePort behaves like a virtio-serial port: reads return 0 (EOF) while
// no host is connected and block while a connected host sends nothing.
type fakePort struct {
	mu        sync.Mutex
	cond      *sync.Cond
	connected bool
	reads     [][]byte // a nil entry is a disconnect (EOF)
	eofs      int
	output    bytes.Buffer
}

func newFakePort() *fakePort {
	p := &fakePort{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *fakePort) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.reads) == 0 && p.connected {
		p.cond.Wait()
	}
	if len(p.reads) == 0 || p.reads[0] == nil {
		if len(p.reads) > 0 {
			p.reads = p.reads[1:]
		}
		p.eofs++
		return 0, io.EOF
	}
	n := copy(b, p.reads[0])
	p.reads[0] = p.reads[0][n:]
	if len(p.reads[0]) == 0 {
		p.reads = p.reads[1:]
	}
	return n, nil
}

func (p *fakePort) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.Write(b)
}

// push queues host input; connected says whether the host stays attached
// once it has been read.
func (p *fakePort) push(connected bool, chunks ...[]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.connected = connected
	p.reads = append(p.reads, chunks...)
	p.cond.Broadcast()
}

func frame(t *testing.T, h map[string]any, payload []byte) []byte {
	b, err := protocol.Encode(h, payload)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestServeSurvivesDisconnects(t *testing.T) {
	port := newFakePort()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		Serve(port, session.Options{Reaper: reaper.Start(), BootID: func() string { return "" }}, 0, stop)
		close(done)
	}()
	defer func() {
		close(stop)
		port.push(false) // disconnect so the blocked read returns
		<-done
	}()

	// An old host left half a frame behind: its header promises 1000
	// payload bytes. Were the frame resumed after the EOF, the new host's
	// hello would be swallowed as its payload.
	stale := frame(t, map[string]any{"type": "ping", "id": 1}, make([]byte, 1000))[:100]
	port.push(false, stale, nil)
	time.Sleep(50 * time.Millisecond) // a few idle polls with no host
	port.push(true, frame(t, map[string]any{"type": "hello", "id": 2, "nonce": "x"}, nil),
		frame(t, map[string]any{"type": "ping", "id": 3}, nil))

	deadline := time.Now().Add(3 * time.Second)
	for {
		port.mu.Lock()
		out := append([]byte(nil), port.output.Bytes()...)
		eofs := port.eofs
		port.mu.Unlock()
		got := decodeReplies(out)
		if reflect.DeepEqual(got, []string{"hello_ok/2", "ok/3"}) {
			if eofs < 3 {
				t.Fatalf("only %d EOF polls", eofs)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("port output %v", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPollInterval(t *testing.T) {
	if got := PollInterval(NamePrefix + "0"); got != ReconnectPoll {
		t.Fatalf("port 0 polls every %v", got)
	}
	for _, n := range []string{"1", "2", "3"} {
		if got := PollInterval(NamePrefix + n); got != SpareReconnectPoll {
			t.Fatalf("port %s polls every %v", n, got)
		}
	}
}
