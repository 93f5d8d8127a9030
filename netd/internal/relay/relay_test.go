package relay

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"pyro/netd/internal/frames"
	"pyro/netd/internal/policy"
)

var (
	guestMAC = [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	passtMAC = [6]byte{0x52, 0x56, 0, 0, 0, 2}
	guestIP  = netip.MustParseAddr("10.0.2.15")
	dnsIP    = netip.MustParseAddr("10.0.2.3")
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tcpSyn is what a root guest can put on the wire: any destination.
func tcpSyn(dst netip.Addr, port uint16) []byte {
	f := frames.UDPReply(passtMAC, guestMAC, guestIP, dst, 40000, port, 1, make([]byte, 12))
	f[14+9] = frames.ProtoTCP
	return f
}

func dnsQuery(name string) []byte {
	msg := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(name, ".") {
		msg = append(msg, byte(len(l)))
		msg = append(msg, l...)
	}
	msg = append(msg, 0, 0, 1, 0, 1)
	return frames.UDPReply(passtMAC, guestMAC, guestIP, dnsIP, 41000, 53, 2, msg)
}

type harness struct {
	guest, network net.Conn
	events         *lockedBuffer
	done           chan error
}

func start(t *testing.T, cfg string) *harness {
	t.Helper()
	c, err := policy.Parse([]byte(cfg))
	if err != nil {
		t.Fatal(err)
	}
	guestOuter, guestInner := net.Pipe()
	netOuter, netInner := net.Pipe()
	h := &harness{guest: guestOuter, network: netOuter, events: &lockedBuffer{}, done: make(chan error, 1)}
	r := &Relay{
		Guest:  guestInner,
		Net:    netInner,
		Policy: policy.New(c, func() ([]netip.Addr, error) { return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil }),
		Resolve: func(_ context.Context, name string) ([]netip.Addr, error) {
			if !strings.HasSuffix(name, ".") {
				t.Errorf("%q is resolved relative to the host's search domains", name)
			}
			switch strings.TrimSuffix(name, ".") {
			case "public.test":
				return []netip.Addr{netip.MustParseAddr("93.184.216.34")}, nil
			case "rebind.test":
				return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("169.254.169.254")}, nil
			}
			return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		},
		Events: NewEvents(h.events, 100),
	}
	go func() { h.done <- r.Run() }()
	t.Cleanup(func() { guestOuter.Close(); netOuter.Close() })
	return h
}

func send(t *testing.T, c net.Conn, frame []byte) {
	t.Helper()
	_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if err := frames.WriteFrame(c, frame, frames.Scratch()); err != nil {
		t.Fatal(err)
	}
}

func receive(c net.Conn, wait time.Duration) ([]byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(wait))
	return frames.ReadFrame(c, make([]byte, frames.MaxFrame))
}

const base = `"guestIp":"10.0.2.15","gateway":"10.0.2.2","dns":"10.0.2.3","egress":true`

func TestOnlyAllowedFramesReachTheNetwork(t *testing.T) {
	h := start(t, `{`+base+`}`)
	// Blocked ones first: if any got through, it would be what the network side reads first.
	send(t, h.guest, tcpSyn(netip.MustParseAddr("127.0.0.1"), 8765))
	send(t, h.guest, tcpSyn(netip.MustParseAddr("10.0.2.2"), 8765))
	send(t, h.guest, tcpSyn(netip.MustParseAddr("169.254.169.254"), 80))
	ipv6 := append(append(append([]byte{}, passtMAC[:]...), guestMAC[:]...), 0x86, 0xdd, 0x60, 0, 0, 0)
	send(t, h.guest, ipv6)
	allowed := tcpSyn(netip.MustParseAddr("93.184.216.34"), 443)
	send(t, h.guest, allowed)
	got, err := receive(h.network, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, allowed) {
		t.Fatalf("the network saw a frame that should have been dropped: % x", got[:34])
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && strings.Count(h.events.String(), "\n") < 3 {
		time.Sleep(10 * time.Millisecond)
	}
	log := h.events.String()
	for _, want := range []string{`"dest":"127.0.0.1","port":8765`, `"dest":"10.0.2.2"`, `"dest":"169.254.169.254"`, "link-local"} {
		if !strings.Contains(log, want) {
			t.Errorf("events lack %s:\n%s", want, log)
		}
	}
	// The other way, frames pass untouched.
	reply := tcpSyn(netip.MustParseAddr("1.2.3.4"), 1)
	send(t, h.network, reply)
	if got, err := receive(h.guest, 2*time.Second); err != nil || !bytes.Equal(got, reply) {
		t.Fatalf("towards the guest: %v", err)
	}
}

func dnsAnswer(t *testing.T, h *harness, name string) (rcode int, addrs []string) {
	t.Helper()
	send(t, h.guest, dnsQuery(name))
	frame, err := receive(h.guest, 3*time.Second)
	if err != nil {
		t.Fatalf("%s: no answer: %v", name, err)
	}
	eth, _ := frames.ParseEthernet(frame)
	if eth.Dst != guestMAC || eth.Src != passtMAC {
		t.Errorf("answer MACs %x -> %x", eth.Src, eth.Dst)
	}
	ip, err := frames.ParseIPv4(eth.Payload)
	if err != nil || ip.Src != dnsIP || ip.Dst != guestIP || ip.SrcPort != 53 || ip.DstPort != 41000 {
		t.Fatalf("answer addressing %+v %v", ip, err)
	}
	msg, err := frames.UDPPayload(ip.Payload)
	if err != nil {
		t.Fatal(err)
	}
	rcode = int(binary.BigEndian.Uint16(msg[2:4]) & 0xf)
	n := int(binary.BigEndian.Uint16(msg[6:8]))
	for i := len(msg) - 16*n; i < len(msg); i += 16 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{msg[i+12], msg[i+13], msg[i+14], msg[i+15]}).String())
	}
	return rcode, addrs
}

func TestDNSIsAnsweredHereAndRebindingIsRefused(t *testing.T) {
	h := start(t, `{`+base+`}`)
	if rcode, addrs := dnsAnswer(t, h, "public.test"); rcode != 0 || len(addrs) != 1 || addrs[0] != "93.184.216.34" {
		t.Errorf("public.test: %d %v", rcode, addrs)
	}
	if rcode, _ := dnsAnswer(t, h, "rebind.test"); rcode != 5 {
		t.Errorf("a name resolving to loopback and metadata addresses: rcode %d", rcode)
	}
	if rcode, _ := dnsAnswer(t, h, "missing.test"); rcode != 3 {
		t.Errorf("missing.test: rcode %d", rcode)
	}
	if !strings.Contains(h.events.String(), `"name":"rebind.test"`) {
		t.Errorf("the refusal is recorded: %s", h.events.String())
	}
}

func TestAllowedHostsRefuseOtherNamesAndTheirAddresses(t *testing.T) {
	h := start(t, `{`+base+`,"allowHosts":["public.test"]}`)
	addr := netip.MustParseAddr("93.184.216.34")
	if rcode, _ := dnsAnswer(t, h, "other.test"); rcode != 5 {
		t.Errorf("a name off the list: rcode %d", rcode)
	}
	// Before the name is resolved its address is closed too.
	send(t, h.guest, tcpSyn(addr, 443))
	if rcode, addrs := dnsAnswer(t, h, "public.test"); rcode != 0 || len(addrs) != 1 {
		t.Errorf("public.test: %d %v", rcode, addrs)
	}
	syn := tcpSyn(addr, 443)
	send(t, h.guest, syn)
	if got, err := receive(h.network, 2*time.Second); err != nil || !bytes.Equal(got, syn) {
		t.Fatalf("after resolving, the address is open: %v", err)
	}
}

func TestBrokenFramingEndsTheRelay(t *testing.T) {
	h := start(t, `{`+base+`}`)
	_ = h.guest.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = h.guest.Write([]byte{0xff, 0xff, 0xff, 0xff})
	select {
	case err := <-h.done:
		if err == nil {
			t.Error("no error")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the relay kept going on a broken stream")
	}
}

func TestEventsAreFoldedAndCapped(t *testing.T) {
	var b lockedBuffer
	e := NewEvents(&b, 3)
	for i := 0; i < 100; i++ {
		e.Blocked("tcp", netip.MustParseAddr("127.0.0.1"), 80, "loopback")
	}
	if n := strings.Count(b.String(), "\n"); n != 1 {
		t.Errorf("repeats folded: %d lines", n)
	}
	for i := 0; i < 100; i++ {
		e.Blocked("tcp", netip.MustParseAddr("127.0.0.1"), uint16(1000+i), "loopback")
	}
	if n := strings.Count(b.String(), "\n"); n != 3 || !strings.Contains(b.String(), "suppressed") {
		t.Errorf("capped: %s", b.String())
	}
}

func TestFramesWithTrailingBytesOrOversizedAreDropped(t *testing.T) {
	h := start(t, `{`+base+`}`)
	allowed := tcpSyn(netip.MustParseAddr("93.184.216.34"), 443)
	// The allowed packet with something riding behind it: passt must never see the rider.
	rider := append(append([]byte{}, allowed...), []byte("\x00\x00\x00\x40hidden frame")...)
	send(t, h.guest, rider)
	arpCarrier := make([]byte, 300)
	copy(arpCarrier, dnsQuery("x.test")[:14])
	arpCarrier[12], arpCarrier[13] = 0x08, 0x06
	send(t, h.guest, arpCarrier)
	send(t, h.guest, allowed)
	got, err := receive(h.network, 2*time.Second)
	if err != nil || !bytes.Equal(got, allowed) {
		t.Fatalf("the first frame on the network must be the clean one: %v % x", err, got)
	}
}

// recorder is a network side that remembers each Write call.
type recorder struct {
	net.Conn
	mu    sync.Mutex
	calls [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.calls = append(r.calls, append([]byte(nil), p...))
	r.mu.Unlock()
	return len(p), nil
}

func TestEachForwardedFrameIsOneWrite(t *testing.T) {
	c, _ := policy.Parse([]byte(`{` + base + `}`))
	guestOuter, guestInner := net.Pipe()
	netOuter, netInner := net.Pipe()
	t.Cleanup(func() { guestOuter.Close(); netOuter.Close() })
	rec := &recorder{Conn: netInner}
	r := &Relay{Guest: guestInner, Net: rec, Policy: policy.New(c, func() ([]netip.Addr, error) { return nil, nil }), Events: NewEvents(&lockedBuffer{}, 10)}
	go func() { _ = r.Run() }()
	for i := 0; i < 50; i++ {
		send(t, guestOuter, tcpSyn(netip.MustParseAddr("93.184.216.34"), uint16(1000+i)))
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		rec.mu.Lock()
		n := len(rec.calls)
		rec.mu.Unlock()
		if n == 50 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.calls) != 50 {
		t.Fatalf("%d writes for 50 frames", len(rec.calls))
	}
	for i, call := range rec.calls {
		if int(binary.BigEndian.Uint32(call[:4]))+4 != len(call) {
			t.Fatalf("write %d is not exactly one frame", i)
		}
	}
}
