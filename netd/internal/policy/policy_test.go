package policy

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func mustParse(t *testing.T, js string) *Config {
	t.Helper()
	c, err := Parse([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const base = `"guestIp":"10.0.2.15","gateway":"10.0.2.2","dns":"10.0.2.3"`

var guest = netip.MustParseAddr("10.0.2.15")

func hosts(addrs ...string) HostAddrs {
	return func() ([]netip.Addr, error) {
		var out []netip.Addr
		for _, a := range addrs {
			out = append(out, netip.MustParseAddr(a))
		}
		return out, nil
	}
}

func TestDefaultEgressIsThePublicInternetOnly(t *testing.T) {
	p := New(mustParse(t, `{`+base+`,"egress":true}`), hosts("203.0.114.7", "127.0.0.1"))
	forward := []string{"1.1.1.1", "93.184.216.34", "8.8.8.8", "203.0.114.8"}
	for _, a := range forward {
		if d := p.Decide(guest, netip.MustParseAddr(a), 6, 443, false); d.Verdict != Forward {
			t.Errorf("%s: %+v", a, d)
		}
	}
	drop := map[string]string{
		"127.0.0.1":       "loopback",
		"127.1.2.3":       "loopback",
		"10.0.2.2":        "gateway",
		"10.1.2.3":        "private",
		"172.16.0.1":      "private",
		"172.31.255.255":  "private",
		"192.168.1.1":     "private",
		"100.64.0.1":      "shared",
		"169.254.169.254": "link-local",
		"0.0.0.0":         "this network",
		"224.0.0.1":       "multicast",
		"255.255.255.255": "broadcast",
		"240.0.0.1":       "reserved",
		"192.0.2.1":       "documentation",
		"198.51.100.1":    "documentation",
		"203.0.113.1":     "documentation",
		"198.18.0.1":      "benchmarking",
		"203.0.114.7":     "this host",
	}
	for a, why := range drop {
		d := p.Decide(guest, netip.MustParseAddr(a), 6, 80, false)
		if d.Verdict != Drop || d.Reason == "" {
			t.Errorf("%s (%s) was not dropped: %+v", a, why, d)
		}
	}
}

func TestSpoofingFragmentsAndOtherProtocolsAreDropped(t *testing.T) {
	p := New(mustParse(t, `{`+base+`,"egress":true}`), hosts())
	pub := netip.MustParseAddr("1.1.1.1")
	if d := p.Decide(netip.MustParseAddr("10.0.2.16"), pub, 6, 80, false); d.Verdict != Drop || !strings.Contains(d.Reason, "source") {
		t.Errorf("spoofed source: %+v", d)
	}
	if d := p.Decide(guest, pub, 6, 80, true); d.Verdict != Drop {
		t.Errorf("fragment: %+v", d)
	}
	if d := p.Decide(guest, pub, 47, 0, false); d.Verdict != Drop {
		t.Errorf("GRE: %+v", d)
	}
	if d := p.Decide(guest, pub, 1, 0, false); d.Verdict != Forward {
		t.Errorf("ICMP: %+v", d)
	}
}

func TestDNSGoesToTheResolverOnly(t *testing.T) {
	p := New(mustParse(t, `{`+base+`,"egress":false}`), hosts())
	dns := netip.MustParseAddr("10.0.2.3")
	if d := p.Decide(guest, dns, 17, 53, false); d.Verdict != DNS {
		t.Errorf("udp/53: %+v", d)
	}
	if d := p.Decide(guest, dns, 6, 53, false); d.Verdict != Drop {
		t.Errorf("tcp/53: %+v", d)
	}
	if d := p.Decide(guest, netip.MustParseAddr("1.1.1.1"), 6, 443, false); d.Verdict != Drop || !strings.Contains(d.Reason, "no egress") {
		t.Errorf("no egress: %+v", d)
	}
}

func TestOperatorDestinationsOpenBlockedRanges(t *testing.T) {
	p := New(mustParse(t, `{`+base+`,"egress":true,"destinations":[{"prefix":"10.77.0.0/24","ports":[8080]},{"prefix":"192.168.5.5/32"},{"prefix":"127.0.0.1/32","ports":[3142]}]}`), hosts())
	if d := p.Decide(guest, netip.MustParseAddr("10.77.0.9"), 6, 8080, false); d.Verdict != Forward {
		t.Errorf("opened port: %+v", d)
	}
	if d := p.Decide(guest, netip.MustParseAddr("10.77.0.9"), 6, 8081, false); d.Verdict != Drop {
		t.Errorf("other port: %+v", d)
	}
	if d := p.Decide(guest, netip.MustParseAddr("192.168.5.5"), 17, 9, false); d.Verdict != Forward {
		t.Errorf("any port: %+v", d)
	}
	gw := netip.MustParseAddr("10.0.2.2")
	if d := p.Decide(guest, gw, 6, 3142, false); d.Verdict != Forward {
		t.Errorf("loopback port at the gateway: %+v", d)
	}
	if d := p.Decide(guest, gw, 6, 22, false); d.Verdict != Drop {
		t.Errorf("another loopback port: %+v", d)
	}
	if d := p.Decide(guest, netip.MustParseAddr("127.0.0.1"), 6, 3142, false); d.Verdict != Drop {
		t.Errorf("127.0.0.1 itself stays closed: %+v", d)
	}
	if !p.LoopbackOpen() {
		t.Error("LoopbackOpen")
	}
}

func TestAllowedHostsNarrowEgressToLearnedAddresses(t *testing.T) {
	p := New(mustParse(t, `{`+base+`,"egress":true,"allowHosts":["Example.org.","*.github.com"]}`), hosts())
	for name, want := range map[string]bool{
		"example.org": true, "EXAMPLE.ORG.": true, "www.example.org": false,
		"github.com": false, "api.github.com": true, "a.b.github.com": true, "evilgithub.com": false,
	} {
		if got := p.NameAllowed(name); got != want {
			t.Errorf("NameAllowed(%q) = %v", name, got)
		}
	}
	addr := netip.MustParseAddr("93.184.216.34")
	if d := p.Decide(guest, addr, 6, 443, false); d.Verdict != Drop {
		t.Errorf("before resolving: %+v", d)
	}
	p.Learn("example.org", addr)
	if d := p.Decide(guest, addr, 6, 443, false); d.Verdict != Forward {
		t.Errorf("after resolving: %+v", d)
	}
}

func TestUnknownHostAddressesAreRefused(t *testing.T) {
	p := New(mustParse(t, `{`+base+`,"egress":true}`), func() ([]netip.Addr, error) { return nil, errors.New("no netlink") })
	if d := p.Decide(guest, netip.MustParseAddr("1.1.1.1"), 6, 443, false); d.Verdict != Drop {
		t.Errorf("without the host's addresses nothing can be judged safe: %+v", d)
	}
}

func TestBadConfigsAreRejected(t *testing.T) {
	for _, js := range []string{
		`{}`,
		`{` + base + `,"allowHosts":[""]}`,
		`{` + base + `,"allowHosts":["*."]}`,
		`{` + base + `,"allowHosts":["*"]}`,
		`{` + base + `,"allowHosts":["a.*.org"]}`,
		`{` + base + `,"allowHosts":["exa mple.org"]}`,
		`{` + base + `,"allowHosts":["a..org"]}`,
		`{` + base + `,"destinations":[{"prefix":"127.0.0.0/8","ports":[1]}]}`,
		`{` + base + `,"destinations":[{"prefix":"127.0.0.1/32"}]}`,
		`{` + base + `,"destinations":[{"prefix":"::1/128"}]}`,
		`{` + base + `,"destinations":[{"prefix":"0.0.0.0/0"}]}`,
		`{` + base + `,"destinations":[{"prefix":"126.0.0.0/7","ports":[80]}]}`,
		`not json`,
	} {
		if _, err := Parse([]byte(js)); err == nil {
			t.Errorf("accepted %s", js)
		}
	}
}
