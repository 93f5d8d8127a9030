// Package relay moves Ethernet frames between the guest's NIC (QEMU's
// stream backend) and passt, which turns them into host sockets. Frames
// from the guest pass only when the policy says so; DNS queries to the
// guest's resolver are answered here. Frames towards the guest pass as
// they are: passt sends only what answers the guest's own traffic.
package relay

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"pyro/netd/internal/dnsanswer"
	"pyro/netd/internal/frames"
	"pyro/netd/internal/policy"
)

// Resolver looks up a name's IPv4 addresses with the host's resolver.
type Resolver func(ctx context.Context, name string) ([]netip.Addr, error)

// Relay connects a guest to the network under a policy.
type Relay struct {
	Guest    io.ReadWriter
	Net      io.ReadWriter
	Policy   *policy.Policy
	Resolve  Resolver
	Events   *Events
	dnsSlots chan struct{}

	guestMu      sync.Mutex
	guestScratch []byte
	ipID         uint16
}

const bufSize = 256 * 1024

// Run relays until either side closes or breaks the framing; it returns
// the first error (io.EOF when the guest side closed). Every frame is
// written on its own, in one call (see frames.WriteFrame): batching frames
// into buffered writes would let the stream be cut inside a length prefix.
func (r *Relay) Run() error {
	r.dnsSlots = make(chan struct{}, 32)
	r.guestScratch = frames.Scratch()
	errs := make(chan error, 2)
	go func() { errs <- r.fromGuest() }()
	go func() { errs <- r.toGuest() }()
	return <-errs
}

func (r *Relay) writeGuest(frame []byte) error {
	r.guestMu.Lock()
	defer r.guestMu.Unlock()
	return frames.WriteFrame(r.Guest, frame, r.guestScratch)
}

func (r *Relay) toGuest() error {
	br := bufio.NewReaderSize(r.Net, bufSize)
	buf := make([]byte, frames.MaxFrame)
	for {
		frame, err := frames.ReadFrame(br, buf)
		if err != nil {
			return fmt.Errorf("network side: %w", err)
		}
		if err := r.writeGuest(frame); err != nil {
			return fmt.Errorf("guest side: %w", err)
		}
	}
}

func (r *Relay) fromGuest() error {
	br := bufio.NewReaderSize(r.Guest, bufSize)
	buf := make([]byte, frames.MaxFrame)
	scratch := frames.Scratch()
	for {
		frame, err := frames.ReadFrame(br, buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return io.EOF
			}
			return fmt.Errorf("guest side: %w", err)
		}
		if r.judge(frame) {
			if err := frames.WriteFrame(r.Net, frame, scratch); err != nil {
				return fmt.Errorf("network side: %w", err)
			}
		}
	}
}

// judge says whether a frame from the guest goes to the network. DNS
// queries are answered here; refusals are recorded.
func (r *Relay) judge(frame []byte) bool {
	eth, err := frames.ParseEthernet(frame)
	if err != nil || len(frame) > frames.MaxForward {
		return false
	}
	switch eth.EtherType {
	case frames.EtherARP:
		return frames.ValidARP(frame, r.Policy.Config().GuestIP)
	case frames.EtherIPv4:
	default:
		// IPv6 and anything else: the guest's stack sends some on its own (neighbour discovery), not worth a record.
		return false
	}
	ip, err := frames.ParseIPv4(eth.Payload)
	if err != nil {
		r.Events.Blocked("ip", netip.Addr{}, 0, "malformed IPv4 packet: "+err.Error())
		return false
	}
	// Nothing rides behind the packet but Ethernet's minimum padding: what passt reads is exactly what was judged.
	if 14+ip.Total != len(frame) && !(len(frame) == 60 && 14+ip.Total < 60) {
		r.Events.Blocked(protoName(ip.Protocol), ip.Dst, ip.DstPort, "bytes after the end of the IP packet")
		return false
	}
	d := r.Policy.Decide(ip.Src, ip.Dst, ip.Protocol, ip.DstPort, ip.Fragment)
	switch d.Verdict {
	case policy.Forward:
		return true
	case policy.DNS:
		payload, err := frames.UDPPayload(ip.Payload)
		if err == nil {
			r.answerDNS(eth, ip, append([]byte(nil), payload...))
		}
		return false
	default:
		r.Events.Blocked(protoName(ip.Protocol), ip.Dst, ip.DstPort, d.Reason)
		return false
	}
}

func protoName(p uint8) string {
	switch p {
	case frames.ProtoTCP:
		return "tcp"
	case frames.ProtoUDP:
		return "udp"
	case frames.ProtoICMP:
		return "icmp"
	}
	return fmt.Sprintf("ip-proto-%d", p)
}

// answerDNS resolves in the background (a slow name must not stall the
// guest's other traffic); with too many in flight, the query is dropped and
// the guest's resolver retries.
func (r *Relay) answerDNS(eth frames.Ethernet, ip frames.IPv4, payload []byte) {
	select {
	case r.dnsSlots <- struct{}{}:
	default:
		return
	}
	go func() {
		defer func() { <-r.dnsSlots }()
		q, err := dnsanswer.ParseQuery(payload)
		if err != nil {
			if len(payload) >= 12 {
				r.replyDNS(eth, ip, dnsanswer.Answer(q, dnsanswer.RcodeFormErr, nil, 0))
			}
			return
		}
		r.replyDNS(eth, ip, r.resolve(q))
	}()
}

func (r *Relay) resolve(q dnsanswer.Query) []byte {
	if q.Opcode() != 0 || q.Class != dnsanswer.ClassIN {
		return dnsanswer.Answer(q, dnsanswer.RcodeNotImp, nil, 0)
	}
	if !r.Policy.NameAllowed(q.Name) {
		r.Events.Refused(q.Name, "the name is not in this VM's allowed hosts")
		return dnsanswer.Answer(q, dnsanswer.RcodeRefused, nil, 0)
	}
	if !r.Policy.Config().Egress {
		return dnsanswer.Answer(q, dnsanswer.RcodeRefused, nil, 0)
	}
	if q.Type != dnsanswer.TypeA {
		// No IPv6, and no other record types: an empty answer makes clients ask for A.
		return dnsanswer.Answer(q, dnsanswer.RcodeOK, nil, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Absolute: the host's search domains must not turn an allowed name into one of the host's internal names.
	addrs, err := r.Resolve(ctx, q.Name+".")
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return dnsanswer.Answer(q, dnsanswer.RcodeNXDomain, nil, 0)
		}
		return dnsanswer.Answer(q, dnsanswer.RcodeServFail, nil, 0)
	}
	var usable []netip.Addr
	var refused []string
	for _, a := range addrs {
		a = a.Unmap()
		if reason := r.Policy.AddressReason(a); reason != "" && !r.Policy.Explicit(a) {
			refused = append(refused, fmt.Sprintf("%v (%s)", a, reason))
			continue
		}
		usable = append(usable, a)
		r.Policy.Learn(q.Name, a)
	}
	if len(usable) == 0 {
		if len(refused) > 0 {
			r.Events.Refused(q.Name, "it resolves only to blocked addresses: "+joinLimited(refused, 4))
			return dnsanswer.Answer(q, dnsanswer.RcodeRefused, nil, 0)
		}
		return dnsanswer.Answer(q, dnsanswer.RcodeNXDomain, nil, 0)
	}
	return dnsanswer.Answer(q, dnsanswer.RcodeOK, usable, 60)
}

func joinLimited(items []string, max int) string {
	if len(items) > max {
		items = append(items[:max:max], fmt.Sprintf("and %d more", len(items)-max))
	}
	out := ""
	for i, s := range items {
		if i > 0 {
			out += ", "
		}
		out += s
	}
	return out
}

func (r *Relay) replyDNS(eth frames.Ethernet, ip frames.IPv4, msg []byte) {
	r.guestMu.Lock()
	r.ipID++
	id := r.ipID
	r.guestMu.Unlock()
	frame := frames.UDPReply(eth.Src, eth.Dst, ip.Dst, ip.Src, 53, ip.SrcPort, id, msg)
	_ = r.writeGuest(frame)
}

// Events records what the policy refused, as JSON lines, for
// vm_network_info. Repeats within a few seconds are folded and the total
// is capped, so a guest cannot fill the disk with refusals.
type Events struct {
	mu      sync.Mutex
	w       io.Writer
	seen    map[string]time.Time
	written int
	max     int
	now     func() time.Time
}

// NewEvents writes at most max records to w.
func NewEvents(w io.Writer, max int) *Events {
	return &Events{w: w, seen: map[string]time.Time{}, max: max, now: time.Now}
}

type event struct {
	Time   string `json:"time"`
	Kind   string `json:"kind"`
	Proto  string `json:"proto,omitempty"`
	Dest   string `json:"dest,omitempty"`
	Port   uint16 `json:"port,omitempty"`
	Name   string `json:"name,omitempty"`
	Reason string `json:"reason"`
}

// Blocked records a packet the policy dropped.
func (e *Events) Blocked(proto string, dst netip.Addr, port uint16, reason string) {
	dest := ""
	if dst.IsValid() {
		dest = dst.String()
	}
	e.record(event{Kind: "blocked", Proto: proto, Dest: dest, Port: port, Reason: reason})
}

// Refused records a DNS question the policy would not answer.
func (e *Events) Refused(name, reason string) {
	e.record(event{Kind: "dns_refused", Name: name, Reason: reason})
}

func (e *Events) record(ev event) {
	if e == nil {
		return
	}
	key := fmt.Sprintf("%s|%s|%s|%d|%s|%s", ev.Kind, ev.Proto, ev.Dest, ev.Port, ev.Name, ev.Reason)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.now()
	if last, ok := e.seen[key]; ok && now.Sub(last) < 10*time.Second {
		return
	}
	if len(e.seen) > 10000 {
		e.seen = map[string]time.Time{}
	}
	e.seen[key] = now
	if e.written >= e.max {
		return
	}
	e.written++
	ev.Time = now.UTC().Format(time.RFC3339Nano)
	if e.written == e.max {
		ev = event{Time: ev.Time, Kind: "suppressed", Reason: "too many refusals; later ones are not recorded"}
	}
	line, _ := json.Marshal(ev)
	_, _ = e.w.Write(append(line, '\n'))
}
