// Package policy decides what a guest may reach. The default is the public
// internet and nothing else: never this host (its loopback, its own
// addresses), private or shared ranges, link-local (cloud metadata),
// reserved, documentation or multicast space, and no IPv6. An allowlist of
// host names narrows that further; an operator can open explicit
// destinations, which a guest or a model cannot.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Config is what pyro passes to the helper for one VM.
type Config struct {
	// GuestIP, Gateway and DNS are the guest's side of the network.
	GuestIP netip.Addr `json:"guestIp"`
	Gateway netip.Addr `json:"gateway"`
	DNS     netip.Addr `json:"dns"`
	// Egress false blocks everything (a template being made).
	Egress bool `json:"egress"`
	// AllowHosts, when not empty, are the only names the guest may resolve
	// and reach: "example.org" exactly, "*.example.org" for its subdomains.
	AllowHosts []string `json:"allowHosts"`
	// Destinations the operator opened explicitly, even in blocked ranges.
	Destinations []Destination `json:"destinations"`
}

// Destination is an address range, optionally limited to some ports. A
// loopback destination means the host's own 127.0.0.1, which the guest
// reaches at its gateway address.
type Destination struct {
	Prefix netip.Prefix `json:"prefix"`
	Ports  []uint16     `json:"ports"`
}

// Parse reads and checks a Config.
func Parse(data []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if !c.GuestIP.Is4() || !c.Gateway.Is4() || !c.DNS.Is4() {
		return nil, errors.New("policy: guestIp, gateway and dns must be IPv4 addresses")
	}
	for i, h := range c.AllowHosts {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if !validName(strings.TrimPrefix(h, "*.")) {
			return nil, fmt.Errorf("policy: %q is not a host name or *.suffix", c.AllowHosts[i])
		}
		c.AllowHosts[i] = h
	}
	for _, d := range c.Destinations {
		if !d.Prefix.IsValid() || !d.Prefix.Addr().Is4() {
			return nil, fmt.Errorf("policy: destination %v is not an IPv4 prefix", d.Prefix)
		}
		// A prefix that takes in the loopback range (0.0.0.0/0, 126.0.0.0/7) would open all of it.
		if d.Prefix.Overlaps(loopbackRange) && (d.Prefix.Bits() != 32 || d.Prefix.Addr() != loopbackHost || len(d.Ports) == 0) {
			return nil, fmt.Errorf("policy: a loopback destination must be 127.0.0.1 with ports, got %v", d.Prefix)
		}
	}
	return &c, nil
}

// validName accepts DNS names: dot-separated labels of letters, digits,
// hyphens and underscores, each 1 to 63 long, 253 in all.
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

var (
	loopbackRange = netip.MustParsePrefix("127.0.0.0/8")
	loopbackHost  = netip.AddrFrom4([4]byte{127, 0, 0, 1})
)

type blockedRange struct {
	prefix netip.Prefix
	reason string
}

// Blocked are the IPv4 ranges a guest never reaches unless the operator
// opens a destination in them.
var blocked = []blockedRange{
	{netip.MustParsePrefix("0.0.0.0/8"), "\"this network\" (0.0.0.0/8)"},
	{netip.MustParsePrefix("10.0.0.0/8"), "a private address (10.0.0.0/8)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared address (100.64.0.0/10)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "the host's loopback (127.0.0.0/8)"},
	{netip.MustParsePrefix("169.254.0.0/16"), "a link-local address (169.254.0.0/16, cloud metadata)"},
	{netip.MustParsePrefix("172.16.0.0/12"), "a private address (172.16.0.0/12)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol address (192.0.0.0/24)"},
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation address (192.0.2.0/24)"},
	{netip.MustParsePrefix("192.88.99.0/24"), "a reserved relay address (192.88.99.0/24)"},
	{netip.MustParsePrefix("192.168.0.0/16"), "a private address (192.168.0.0/16)"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address (198.18.0.0/15)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation address (198.51.100.0/24)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation address (203.0.113.0/24)"},
	{netip.MustParsePrefix("224.0.0.0/4"), "a multicast address (224.0.0.0/4)"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved or broadcast address (240.0.0.0/4)"},
}

// BlockedRanges lists the always-blocked ranges, for reports.
func BlockedRanges() []string {
	out := make([]string, 0, len(blocked))
	for _, b := range blocked {
		out = append(out, b.prefix.String())
	}
	return out
}

// BlockedReason says why addr is never reachable by default, or "".
func BlockedReason(addr netip.Addr) string {
	if !addr.Is4() {
		return "not an IPv4 address (IPv6 is off)"
	}
	for _, b := range blocked {
		if b.prefix.Contains(addr) {
			return b.reason
		}
	}
	return ""
}

// HostAddrs lists this host's own addresses.
type HostAddrs func() ([]netip.Addr, error)

// Verdict is a decision on one packet from the guest.
type Verdict int

const (
	// Drop the packet; Decision.Reason says why.
	Drop Verdict = iota
	// Forward the packet to the network.
	Forward
	// Answer the packet here: a DNS query to the guest's resolver.
	DNS
)

// Decision is a Verdict with its reason (for drops).
type Decision struct {
	Verdict Verdict
	Reason  string
}

// Policy applies a Config to packets. Safe for concurrent use.
type Policy struct {
	cfg       *Config
	hostAddrs HostAddrs
	now       func() time.Time

	mu            sync.Mutex
	own           map[netip.Addr]bool
	ownChecked    time.Time
	learned       map[netip.Addr]string
	maxLearned    int
	loopbackPorts map[uint16]bool
}

// New makes a Policy. hostAddrs is consulted at most every few seconds.
func New(cfg *Config, hostAddrs HostAddrs) *Policy {
	p := &Policy{cfg: cfg, hostAddrs: hostAddrs, now: time.Now, learned: map[netip.Addr]string{}, maxLearned: 4096, loopbackPorts: map[uint16]bool{}}
	for _, d := range cfg.Destinations {
		if d.Prefix.Addr().IsLoopback() {
			for _, port := range d.Ports {
				p.loopbackPorts[port] = true
			}
		}
	}
	return p
}

// Config returns the configuration the policy applies.
func (p *Policy) Config() *Config { return p.cfg }

// LoopbackOpen says whether the operator opened any host loopback port.
func (p *Policy) LoopbackOpen() bool { return len(p.loopbackPorts) > 0 }

// NameAllowed says whether the guest may resolve (and so reach) name.
func (p *Policy) NameAllowed(name string) bool {
	if len(p.cfg.AllowHosts) == 0 {
		return true
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	for _, h := range p.cfg.AllowHosts {
		if strings.HasPrefix(h, "*.") {
			if strings.HasSuffix(name, h[1:]) && len(name) > len(h)-1 {
				return true
			}
		} else if name == h {
			return true
		}
	}
	return false
}

// Learn records that name (allowed) resolved to addr, so the guest may
// reach addr while an allowlist is in force.
func (p *Policy) Learn(name string, addr netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.learned) < p.maxLearned {
		p.learned[addr] = name
	}
}

// AddressReason says why the guest may not reach addr at all (blocked
// range, or this host), or "" when it may be reached.
func (p *Policy) AddressReason(addr netip.Addr) string {
	if r := BlockedReason(addr); r != "" {
		return r
	}
	if p.isOwn(addr) {
		return "an address of this host"
	}
	return ""
}

func (p *Policy) isOwn(addr netip.Addr) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.own == nil || p.now().Sub(p.ownChecked) > 5*time.Second {
		addrs, err := p.hostAddrs()
		if err == nil {
			p.own = map[netip.Addr]bool{}
			for _, a := range addrs {
				p.own[a.Unmap()] = true
			}
			p.ownChecked = p.now()
		} else if p.own == nil {
			// Not knowing the host's addresses, refuse rather than guess.
			return true
		}
	}
	return p.own[addr]
}

// Explicit says whether the operator opened addr (on some port at least).
func (p *Policy) Explicit(addr netip.Addr) bool {
	for _, d := range p.cfg.Destinations {
		if !d.Prefix.Addr().IsLoopback() && d.Prefix.Contains(addr) {
			return true
		}
	}
	return false
}

func (p *Policy) explicit(addr netip.Addr, port uint16, hasPort bool) bool {
	for _, d := range p.cfg.Destinations {
		if d.Prefix.Addr().IsLoopback() || !d.Prefix.Contains(addr) {
			continue
		}
		if len(d.Ports) == 0 {
			return true
		}
		for _, allowed := range d.Ports {
			if hasPort && allowed == port {
				return true
			}
		}
	}
	return false
}

// Decide judges one IPv4 packet from the guest.
func (p *Policy) Decide(src, dst netip.Addr, proto uint8, dstPort uint16, fragment bool) Decision {
	if src != p.cfg.GuestIP {
		return Decision{Drop, fmt.Sprintf("source address %v is not the guest's", src)}
	}
	if fragment {
		return Decision{Drop, "IP fragments are not forwarded"}
	}
	if proto != 1 && proto != 6 && proto != 17 {
		return Decision{Drop, fmt.Sprintf("IP protocol %d is not forwarded (TCP, UDP and ICMP echo are)", proto)}
	}
	hasPort := proto == 6 || proto == 17
	if dst == p.cfg.DNS {
		if proto == 17 && dstPort == 53 {
			return Decision{Verdict: DNS}
		}
		return Decision{Drop, "the resolver answers DNS over UDP port 53 only"}
	}
	if !p.cfg.Egress {
		return Decision{Drop, "this VM has no egress"}
	}
	if dst == p.cfg.Gateway {
		if hasPort && p.loopbackPorts[dstPort] {
			return Decision{Verdict: Forward}
		}
		return Decision{Drop, "the gateway leads to the host's loopback, which is closed"}
	}
	// Only the gateway alias above ever leads to the loopback; no destination opens it directly.
	if loopbackRange.Contains(dst) {
		return Decision{Drop, BlockedReason(dst)}
	}
	if p.explicit(dst, dstPort, hasPort) {
		return Decision{Verdict: Forward}
	}
	if r := p.AddressReason(dst); r != "" {
		return Decision{Drop, r}
	}
	if len(p.cfg.AllowHosts) > 0 {
		p.mu.Lock()
		_, ok := p.learned[dst]
		p.mu.Unlock()
		if !ok {
			return Decision{Drop, "not an address of an allowed host name (resolve the name first)"}
		}
	}
	return Decision{Verdict: Forward}
}
