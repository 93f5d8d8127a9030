// Package dnsanswer parses the guest's DNS queries and builds the answers
// the network helper gives: it resolves names itself (with the host's
// resolver), so it knows every address it hands out and can refuse names
// and addresses the policy does not allow. Only what resolvers and common
// clients send is understood: one question, no compression in it.
package dnsanswer

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
)

// Record types and response codes used here.
const (
	TypeA    = 1
	TypeAAAA = 28
	ClassIN  = 1

	RcodeOK       = 0
	RcodeFormErr  = 1
	RcodeServFail = 2
	RcodeNXDomain = 3
	RcodeNotImp   = 4
	RcodeRefused  = 5
)

// Query is one parsed question.
type Query struct {
	ID       uint16
	Flags    uint16
	Name     string // lower case, without the trailing dot
	Type     uint16
	Class    uint16
	question []byte // the question section as sent, echoed in the answer
}

// ParseQuery parses a DNS query message.
func ParseQuery(msg []byte) (Query, error) {
	if len(msg) < 12 {
		return Query{}, errors.New("short DNS header")
	}
	q := Query{ID: binary.BigEndian.Uint16(msg[0:2]), Flags: binary.BigEndian.Uint16(msg[2:4])}
	if q.Flags&0x8000 != 0 {
		return q, errors.New("not a query")
	}
	if binary.BigEndian.Uint16(msg[4:6]) != 1 {
		return q, errors.New("exactly one question is supported")
	}
	var labels []string
	i := 12
	for {
		if i >= len(msg) {
			return q, errors.New("truncated name")
		}
		n := int(msg[i])
		if n == 0 {
			i++
			break
		}
		if n&0xc0 != 0 {
			return q, errors.New("compressed or extended labels are not supported in questions")
		}
		if i+1+n > len(msg) {
			return q, errors.New("truncated label")
		}
		labels = append(labels, strings.ToLower(string(msg[i+1:i+1+n])))
		i += 1 + n
		if i-12 > 255 {
			return q, errors.New("name too long")
		}
	}
	if i+4 > len(msg) {
		return q, errors.New("truncated question")
	}
	q.Type = binary.BigEndian.Uint16(msg[i : i+2])
	q.Class = binary.BigEndian.Uint16(msg[i+2 : i+4])
	q.Name = strings.Join(labels, ".")
	q.question = append([]byte(nil), msg[12:i+4]...)
	return q, nil
}

// Opcode is the query's kind; only 0 (a standard query) is answered.
func (q Query) Opcode() int { return int(q.Flags>>11) & 0xf }

// MaxMessage is the largest answer: what every resolver takes over UDP.
const MaxMessage = 512

// Answer builds the response to q with the given code and IPv4 answers
// (only used for A questions), each with the given time to live. Answers
// beyond what fits in MaxMessage bytes are left out (a partial set is still
// a valid answer).
func Answer(q Query, rcode int, addrs []netip.Addr, ttl uint32) []byte {
	if q.Type != TypeA {
		addrs = nil
	}
	if room := (MaxMessage - 12 - len(q.question)) / 16; len(addrs) > room {
		if room < 0 {
			room = 0
		}
		addrs = addrs[:room]
	}
	msg := make([]byte, 12, 12+len(q.question)+16*len(addrs))
	binary.BigEndian.PutUint16(msg[0:2], q.ID)
	// QR, the query's opcode and RD, RA, the code.
	flags := uint16(0x8000) | q.Flags&0x7900 | 0x0080 | uint16(rcode&0xf)
	binary.BigEndian.PutUint16(msg[2:4], flags)
	if q.question != nil {
		binary.BigEndian.PutUint16(msg[4:6], 1)
		msg = append(msg, q.question...)
	}
	binary.BigEndian.PutUint16(msg[6:8], uint16(len(addrs)))
	for _, a := range addrs {
		a4 := a.As4()
		// A pointer to the name in the question (offset 12), then type, class, TTL, length, address.
		rr := []byte{0xc0, 12, 0, TypeA, 0, ClassIN, 0, 0, 0, 0, 0, 4, a4[0], a4[1], a4[2], a4[3]}
		binary.BigEndian.PutUint32(rr[6:10], ttl)
		msg = append(msg, rr...)
	}
	return msg
}
