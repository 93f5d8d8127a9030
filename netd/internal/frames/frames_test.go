package frames

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

func TestFramingRoundTripAndBounds(t *testing.T) {
	var b bytes.Buffer
	if err := WriteFrame(&b, []byte("hello"), Scratch()); err != nil {
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

type writes struct{ calls [][]byte }

func (w *writes) Write(p []byte) (int, error) {
	w.calls = append(w.calls, append([]byte(nil), p...))
	return len(p), nil
}

func TestAFrameIsOneWrite(t *testing.T) {
	var w writes
	scratch := Scratch()
	for _, n := range []int{1, 60, 65535} {
		if err := WriteFrame(&w, make([]byte, n), scratch); err != nil {
			t.Fatal(err)
		}
	}
	for i, call := range w.calls {
		if int(binary.BigEndian.Uint32(call[:4]))+4 != len(call) {
			t.Errorf("write %d is not one whole frame (%d bytes)", i, len(call))
		}
	}
	if len(w.calls) != 3 {
		t.Errorf("%d writes for 3 frames", len(w.calls))
	}
	if err := WriteFrame(&w, make([]byte, MaxFrame+1), scratch); err == nil {
		t.Error("an oversized frame was written")
	}
}

func arp(senderMAC [6]byte, senderIP [4]byte, op uint16, extra int) []byte {
	f := make([]byte, 42+extra)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], []byte{0x52, 0x54, 0, 0x12, 0x34, 0x56})
	binary.BigEndian.PutUint16(f[12:14], EtherARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1)
	binary.BigEndian.PutUint16(a[2:4], EtherIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], senderMAC[:])
	copy(a[14:18], senderIP[:])
	return f
}

func TestOnlyPlainARPFromTheGuestIsValid(t *testing.T) {
	guest := netip.MustParseAddr("10.0.2.15")
	mac := [6]byte{0x52, 0x54, 0, 0x12, 0x34, 0x56}
	ip := [4]byte{10, 0, 2, 15}
	if !ValidARP(arp(mac, ip, 1, 0), guest) || !ValidARP(arp(mac, ip, 2, 18), guest) {
		t.Fatal("plain requests and padded replies are valid")
	}
	for name, f := range map[string][]byte{
		"carrier (oversized)":  arp(mac, ip, 1, 100),
		"other sender address": arp(mac, [4]byte{10, 0, 2, 16}, 1, 0),
		"other sender MAC":     arp([6]byte{1, 2, 3, 4, 5, 6}, ip, 1, 0),
		"opcode 3":             arp(mac, ip, 3, 0),
		"short":                arp(mac, ip, 1, 0)[:41],
	} {
		if ValidARP(f, guest) {
			t.Errorf("%s: valid", name)
		}
	}
}
