package frames

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestFramingRoundTripAndBounds(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFrame(&b, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, MaxFrame)
	got, err := ReadFrame(&b, buf)
	if err != nil || string(got) != "hello" {
		t.Fatalf("%q %v", got, err)
	}
	for _, n := range []uint32{0, MaxFrame + 1, 1 << 31} {
		var h [4]byte
		binary.BigEndian.PutUint32(h[:], n)
		if _, err := ReadFrame(bytes.NewReader(append(h[:], make([]byte, 16)...)), buf); err == nil {
			t.Errorf("length %d accepted", n)
		}
	}
	if _, err := ReadFrame(bytes.NewReader([]byte{0, 0, 0, 9, 1, 2}), buf); err == nil {
		t.Error("short frame accepted")
	}
}

func TestUDPReplyParsesBackWithValidChecksums(t *testing.T) {
	src, dst := netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("10.0.2.15")
	frame := UDPReply([6]byte{1, 2, 3, 4, 5, 6}, [6]byte{7, 8, 9, 10, 11, 12}, src, dst, 53, 40000, 7, []byte("answer"))
	eth, err := ParseEthernet(frame)
	if err != nil || eth.EtherType != EtherIPv4 || eth.Dst != [6]byte{1, 2, 3, 4, 5, 6} {
		t.Fatalf("%+v %v", eth, err)
	}
	ip, err := ParseIPv4(eth.Payload)
	if err != nil || ip.Src != src || ip.Dst != dst || ip.SrcPort != 53 || ip.DstPort != 40000 || ip.Fragment {
		t.Fatalf("%+v %v", ip, err)
	}
	if fold(checksum(0, eth.Payload[:20])) != 0 {
		t.Error("IP header checksum")
	}
	s4, d4 := src.As4(), dst.As4()
	sum := checksum(checksum(0, s4[:]), d4[:]) + ProtoUDP + uint32(len(ip.Payload))
	if fold(checksum(sum, ip.Payload)) != 0 {
		t.Error("UDP checksum")
	}
	data, err := UDPPayload(ip.Payload)
	if err != nil || string(data) != "answer" {
		t.Fatalf("%q %v", data, err)
	}
}

func TestHostileIPv4HeadersAreRejected(t *testing.T) {
	good := UDPReply([6]byte{}, [6]byte{}, netip.MustParseAddr("1.1.1.1"), netip.MustParseAddr("2.2.2.2"), 1, 2, 0, []byte("x"))[14:]
	mutate := func(f func(p []byte)) []byte {
		p := append([]byte{}, good...)
		f(p)
		return p
	}
	cases := map[string][]byte{
		"short":             good[:19],
		"version 6":         mutate(func(p []byte) { p[0] = 0x65 }),
		"ihl too small":     mutate(func(p []byte) { p[0] = 0x44 }),
		"total over frame":  mutate(func(p []byte) { binary.BigEndian.PutUint16(p[2:4], 5000) }),
		"total under ihl":   mutate(func(p []byte) { binary.BigEndian.PutUint16(p[2:4], 10) }),
		"no transport room": mutate(func(p []byte) { binary.BigEndian.PutUint16(p[2:4], 22) }),
	}
	for name, p := range cases {
		if _, err := ParseIPv4(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	frag := mutate(func(p []byte) { binary.BigEndian.PutUint16(p[6:8], 0x2000) })
	if ip, err := ParseIPv4(frag); err != nil || !ip.Fragment {
		t.Errorf("more-fragments flag: %+v %v", ip, err)
	}
	if _, err := UDPPayload([]byte{0, 1, 0, 2, 0, 99, 0, 0}); err == nil {
		t.Error("UDP length past the datagram accepted")
	}
}
