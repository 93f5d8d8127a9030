// Package frames reads and writes the guest's Ethernet frames as QEMU's
// stream network backend and passt carry them (a 4-byte big-endian length,
// then the frame), parses the headers the egress filter decides on, and
// builds the few frames the helper sends itself (DNS answers).
//
// Every byte comes from an untrusted guest: parsing never reads past what
// the frame holds and rejects what it does not understand.
package frames

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// MaxFrame is the largest frame read: a 65535-byte IP packet plus its
// Ethernet header, with room for a VLAN tag. Frames are forwarded only up to
// MaxForward bytes.
const MaxFrame = 65535 + 18

// MaxForward is the largest frame passt accepts (ETH_MAX_MTU); the guest's
// MTU of 65520 keeps its frames below it.
const MaxForward = 65535

// ReadFrame reads one length-prefixed frame into buf (which must hold
// MaxFrame bytes) and returns it. A length over MaxFrame is an error: the
// stream is then out of step and must be closed.
func ReadFrame(r io.Reader, buf []byte) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame || int(n) > len(buf) {
		return nil, fmt.Errorf("frame length %d out of range", n)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf[:n], nil
}

// WriteFrame writes one frame with its length prefix in a single Write
// call, using scratch (which must hold MaxFrame+4 bytes) to join them. On a
// unix stream socket the prefix is then never split from its frame. That
// matters: passt (2023) drops a length prefix that a read cuts short and
// reads on as if the guest's bytes were prefixes, so a stream split inside a
// prefix would let a guest smuggle frames past the filter.
func WriteFrame(w io.Writer, frame []byte, scratch []byte) error {
	if len(frame)+4 > len(scratch) {
		return fmt.Errorf("frame of %d bytes is over the limit", len(frame))
	}
	binary.BigEndian.PutUint32(scratch[:4], uint32(len(frame)))
	n := copy(scratch[4:], frame)
	_, err := w.Write(scratch[:4+n])
	return err
}

// Scratch is a buffer for WriteFrame.
func Scratch() []byte { return make([]byte, MaxFrame+4) }

// EtherTypes the filter knows.
const (
	EtherIPv4 = 0x0800
	EtherARP  = 0x0806
	EtherIPv6 = 0x86dd
)

// IP protocol numbers the filter knows.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
	ProtoUDP  = 17
)

// Ethernet is the part of an Ethernet header the helper needs.
type Ethernet struct {
	Dst, Src  [6]byte
	EtherType uint16
	Payload   []byte
}

// ParseEthernet splits a frame into its header and payload.
func ParseEthernet(frame []byte) (Ethernet, error) {
	if len(frame) < 14 {
		return Ethernet{}, errors.New("short Ethernet frame")
	}
	var e Ethernet
	copy(e.Dst[:], frame[0:6])
	copy(e.Src[:], frame[6:12])
	e.EtherType = binary.BigEndian.Uint16(frame[12:14])
	e.Payload = frame[14:]
	return e, nil
}

// ValidARP says whether an ARP frame is a plain IPv4-over-Ethernet request
// or reply from the guest itself (sender guestIP, sender MAC the frame's
// source), at most padded to Ethernet's 60-byte minimum: nothing more
// reaches passt.
func ValidARP(frame []byte, guestIP netip.Addr) bool {
	if len(frame) < 42 || len(frame) > 60 {
		return false
	}
	arp := frame[14:]
	op := binary.BigEndian.Uint16(arp[6:8])
	if binary.BigEndian.Uint16(arp[0:2]) != 1 || binary.BigEndian.Uint16(arp[2:4]) != EtherIPv4 || arp[4] != 6 || arp[5] != 4 || (op != 1 && op != 2) {
		return false
	}
	if string(arp[8:14]) != string(frame[6:12]) {
		return false
	}
	g := guestIP.As4()
	return string(arp[14:18]) == string(g[:])
}

// IPv4 is a parsed IPv4 header with the transport ports when there are any.
type IPv4 struct {
	Src, Dst netip.Addr
	Protocol uint8
	// Fragment is set for any piece of a fragmented packet.
	Fragment bool
	// Total is the packet's length by its header (the frame may be padded beyond it).
	Total int
	// SrcPort and DstPort are set for TCP and UDP (0 otherwise).
	SrcPort, DstPort uint16
	// Payload is the transport segment (bounded by the header's total length).
	Payload []byte
}

// ParseIPv4 parses an IPv4 packet, checking every length against what the
// packet holds.
func ParseIPv4(packet []byte) (IPv4, error) {
	if len(packet) < 20 {
		return IPv4{}, errors.New("short IPv4 header")
	}
	if packet[0]>>4 != 4 {
		return IPv4{}, errors.New("not IPv4")
	}
	ihl := int(packet[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(packet[2:4]))
	if ihl < 20 || total < ihl || total > len(packet) {
		return IPv4{}, fmt.Errorf("bad IPv4 lengths (header %d, total %d, frame %d)", ihl, total, len(packet))
	}
	flags := binary.BigEndian.Uint16(packet[6:8])
	p := IPv4{
		Src:      netip.AddrFrom4([4]byte{packet[12], packet[13], packet[14], packet[15]}),
		Dst:      netip.AddrFrom4([4]byte{packet[16], packet[17], packet[18], packet[19]}),
		Protocol: packet[9],
		Fragment: flags&0x2000 != 0 || flags&0x1fff != 0,
		Total:    total,
		Payload:  packet[ihl:total],
	}
	if !p.Fragment && (p.Protocol == ProtoTCP || p.Protocol == ProtoUDP) {
		if len(p.Payload) < 4 {
			return IPv4{}, errors.New("short transport header")
		}
		p.SrcPort = binary.BigEndian.Uint16(p.Payload[0:2])
		p.DstPort = binary.BigEndian.Uint16(p.Payload[2:4])
	}
	return p, nil
}

// UDPPayload returns a UDP datagram's data, checking its length field.
func UDPPayload(segment []byte) ([]byte, error) {
	if len(segment) < 8 {
		return nil, errors.New("short UDP header")
	}
	n := int(binary.BigEndian.Uint16(segment[4:6]))
	if n < 8 || n > len(segment) {
		return nil, errors.New("bad UDP length")
	}
	return segment[8:n], nil
}

func checksum(sum uint32, data []byte) uint32 {
	for len(data) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(data))
		data = data[2:]
	}
	if len(data) == 1 {
		sum += uint32(data[0]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum>>16 != 0 {
		sum = (sum & 0xffff) + sum>>16
	}
	return ^uint16(sum)
}

// UDPReply builds a whole Ethernet frame carrying a UDP datagram: the
// answer to a datagram the guest sent, from the address it sent it to.
func UDPReply(ethDst, ethSrc [6]byte, src, dst netip.Addr, srcPort, dstPort uint16, id uint16, data []byte) []byte {
	udpLen := 8 + len(data)
	total := 20 + udpLen
	frame := make([]byte, 14+total)
	copy(frame[0:6], ethDst[:])
	copy(frame[6:12], ethSrc[:])
	binary.BigEndian.PutUint16(frame[12:14], EtherIPv4)
	ip := frame[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(total))
	binary.BigEndian.PutUint16(ip[4:6], id)
	binary.BigEndian.PutUint16(ip[6:8], 0x4000) // don't fragment
	ip[8] = 64
	ip[9] = ProtoUDP
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:12], fold(checksum(0, ip)))
	udp := frame[34:]
	binary.BigEndian.PutUint16(udp[0:2], srcPort)
	binary.BigEndian.PutUint16(udp[2:4], dstPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpLen))
	copy(udp[8:], data)
	// The pseudo-header: addresses, protocol, length.
	sum := checksum(0, s4[:])
	sum = checksum(sum, d4[:])
	sum += ProtoUDP + uint32(udpLen)
	c := fold(checksum(sum, udp))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:8], c)
	return frame
}
