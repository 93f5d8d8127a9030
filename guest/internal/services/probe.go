package services

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// Probe timeouts.
const (
	TCPProbeTimeout  = time.Second
	HTTPProbeTimeout = 2 * time.Second
	maxURLLen        = 8192
)

// ProbeKind is what a probe checks.
type ProbeKind string

// The probe kinds.
const (
	ProbeFile ProbeKind = "file"
	ProbeTCP  ProbeKind = "tcp"
	ProbeHTTP ProbeKind = "http"
)

// Probe is one readiness check inside the guest.
type Probe struct {
	Kind ProbeKind
	Path string // file: an absolute path
	Port int    // tcp: 1–65535
	URL  string // http: an http:// URL
}

// Validate checks that the fields the kind needs are there and sound.
func (p Probe) Validate() error {
	switch p.Kind {
	case ProbeFile:
		if p.Path == "" || !path.IsAbs(p.Path) || strings.IndexByte(p.Path, 0) >= 0 {
			return errors.New("a file probe needs path, an absolute path")
		}
	case ProbeTCP:
		if p.Port < 1 || p.Port > 65535 {
			return errors.New("a tcp probe needs port, an integer from 1 to 65535")
		}
	case ProbeHTTP:
		if len(p.URL) > maxURLLen {
			return fmt.Errorf("url is over %d bytes", maxURLLen)
		}
		u, err := url.Parse(p.URL)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return errors.New("an http probe needs url, an http:// URL")
		}
	default:
		return fmt.Errorf("kind must be file, tcp or http, not %q", string(p.Kind))
	}
	return nil
}

// Run performs the (validated) probe and says whether it passed, with why
// not or, for http, the status line.
func (p Probe) Run() (ready bool, detail string) {
	switch p.Kind {
	case ProbeFile:
		if _, err := os.Stat(p.Path); err != nil {
			return false, err.Error()
		}
		return true, "exists"
	case ProbeTCP:
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.Port)), TCPProbeTimeout)
		if err != nil {
			return false, err.Error()
		}
		c.Close()
		return true, "connected"
	case ProbeHTTP:
		return probeHTTP(p.URL)
	}
	return false, "unknown probe kind"
}

func probeHTTP(u string) (bool, string) {
	client := &http.Client{
		Timeout: HTTPProbeTimeout,
		// A redirect is an answer: the service is up.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{
			// The guest's proxy settings must not send a probe of a local
			// service elsewhere.
			Proxy:                  nil,
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 64 << 10,
			DialContext:            (&net.Dialer{Timeout: HTTPProbeTimeout}).DialContext,
		},
	}
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	// The body is not read: closing it discards it with the connection.
	resp.Body.Close()
	status := resp.Proto + " " + resp.Status
	return resp.StatusCode >= 200 && resp.StatusCode < 400, status
}
