package session

import (
	"encoding/json"
	"errors"
	"strings"

	"pyro/guest/internal/protocol"
	"pyro/guest/internal/tcpfwd"
)

// tcpRequest handles the frames of forwarded connections. tcp_send runs on
// the reader: when the guest side is slow its queue fills and the reader
// waits (bounded by tcpfwd.StallTimeout), which back-pressures the host.
func (c *Conn) tcpRequest(s *session, id uint64, typ string, f protocol.Frame) {
	var req protocol.TCPRequest
	if err := json.Unmarshal(f.Header, &req); err != nil {
		c.sendError(s, id, protocol.CodeBadRequest, typ+": "+err.Error())
		return
	}
	if typ == protocol.TypeTCPOpen {
		if req.Port == nil || *req.Port < 1 || *req.Port > 65535 {
			c.sendError(s, id, protocol.CodeBadRequest, "tcp_open: port must be an integer from 1 to 65535")
			return
		}
		if err := s.tcp.Open(id, int(*req.Port)); err != nil {
			msg := strings.TrimPrefix(err.Error(), tcpfwd.ErrBadRequest.Error()+": ")
			code := protocol.CodeBadRequest
			if !errors.Is(err, tcpfwd.ErrBadRequest) {
				code = protocol.CodeConnectFailed
			}
			c.sendError(s, id, code, "tcp_open: "+msg)
		}
		return
	}
	if req.Target == nil {
		c.sendError(s, id, protocol.CodeBadRequest, typ+": target is required")
		return
	}
	switch typ {
	case protocol.TypeTCPSend:
		s.tcp.Send(*req.Target, f.Payload)
	case protocol.TypeTCPShutdown:
		s.tcp.Shutdown(*req.Target)
	case protocol.TypeTCPClose:
		s.tcp.Close(*req.Target)
	}
}
