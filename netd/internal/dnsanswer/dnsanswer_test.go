package dnsanswer

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func query(id uint16, name string, qtype uint16) []byte {
	msg := []byte{byte(id >> 8), byte(id), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range splitLabels(name) {
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	msg = append(msg, 0, byte(qtype>>8), byte(qtype), 0, 1)
	return msg
}

func splitLabels(name string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(name); i++ {
		if i == len(name) || name[i] == '.' {
			out = append(out, name[start:i])
			start = i + 1
		}
	}
	return out
}

func TestParseAndAnswer(t *testing.T) {
	q, err := ParseQuery(query(0xbeef, "WWW.Example.org", TypeA))
	if err != nil {
		t.Fatal(err)
	}
	if q.Name != "www.example.org" || q.Type != TypeA || q.Class != ClassIN || q.ID != 0xbeef {
		t.Fatalf("%+v", q)
	}
	ans := Answer(q, RcodeOK, []netip.Addr{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("1.2.3.4")}, 60)
	if binary.BigEndian.Uint16(ans[0:2]) != 0xbeef {
		t.Error("id")
	}
	flags := binary.BigEndian.Uint16(ans[2:4])
	if flags&0x8000 == 0 || flags&0x0100 == 0 || flags&0xf != 0 {
		t.Errorf("flags %04x", flags)
	}
	if binary.BigEndian.Uint16(ans[4:6]) != 1 || binary.BigEndian.Uint16(ans[6:8]) != 2 {
		t.Error("counts")
	}
	tail := ans[len(ans)-4:]
	if netip.AddrFrom4([4]byte{tail[0], tail[1], tail[2], tail[3]}).String() != "1.2.3.4" {
		t.Errorf("last answer %v", tail)
	}
	refused := Answer(q, RcodeRefused, nil, 0)
	if binary.BigEndian.Uint16(refused[2:4])&0xf != RcodeRefused || binary.BigEndian.Uint16(refused[6:8]) != 0 {
		t.Error("refused")
	}
	q6, _ := ParseQuery(query(1, "example.org", TypeAAAA))
	if binary.BigEndian.Uint16(Answer(q6, RcodeOK, []netip.Addr{netip.MustParseAddr("1.2.3.4")}, 60)[6:8]) != 0 {
		t.Error("AAAA questions get no A records")
	}
}

func TestHostileQueriesAreRejected(t *testing.T) {
	good := query(1, "example.org", TypeA)
	pointer := append(append([]byte{}, good[:12]...), 0xc0, 12, 0, 1, 0, 1)
	twoQuestions := append([]byte{}, good...)
	twoQuestions[5] = 2
	response := append([]byte{}, good...)
	response[2] |= 0x80
	long := []byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for i := 0; i < 5; i++ {
		long = append(long, 63)
		for j := 0; j < 63; j++ {
			long = append(long, 'a')
		}
	}
	long = append(long, 0, 0, 1, 0, 1)
	for name, msg := range map[string][]byte{
		"short": good[:11], "truncated name": good[:15], "truncated question": good[:len(good)-2],
		"pointer": pointer, "two questions": twoQuestions, "response": response, "long name": long,
		"label past the end": append(append([]byte{}, good[:12]...), 60, 'a'),
	} {
		if _, err := ParseQuery(msg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestAnswersFitInAUDPMessage(t *testing.T) {
	q, _ := ParseQuery(query(1, "many.example.org", TypeA))
	var addrs []netip.Addr
	for i := 0; i < 5000; i++ {
		addrs = append(addrs, netip.AddrFrom4([4]byte{1, 2, byte(i >> 8), byte(i)}))
	}
	msg := Answer(q, RcodeOK, addrs, 60)
	if len(msg) > MaxMessage {
		t.Fatalf("%d bytes", len(msg))
	}
	if n := int(binary.BigEndian.Uint16(msg[6:8])); n == 0 || 12+len(q.question)+16*n != len(msg) {
		t.Fatalf("answer count %d does not match the message", n)
	}
}

func TestOpcodeIsRead(t *testing.T) {
	msg := query(1, "example.org", TypeA)
	msg[2] |= 5 << 3 // UPDATE
	q, err := ParseQuery(msg)
	if err != nil {
		t.Fatal(err)
	}
	if q.Opcode() != 5 {
		t.Errorf("opcode %d", q.Opcode())
	}
}
