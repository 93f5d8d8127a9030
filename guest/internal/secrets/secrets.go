// Package secrets keeps the secrets the host hands the guest: one file per
// secret in a directory only root can read (in a VM, a tmpfs on
// /run/pyro-secrets that never reaches a disk), from which commands, shells
// and services get them as environment variables.
//
// Secret values never appear in errors or logs: messages name secrets only.
package secrets

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
)

// Limits of secrets_put.
const (
	MaxSecrets    = 64
	MaxValueLen   = 64 << 10
	MaxPayloadLen = 1 << 20
	maxNameLen    = 64
)

// VMDir is where secrets live in a VM.
const VMDir = "/run/pyro-secrets"

// EnvDir names the environment variable that gives the directory off-VM.
const EnvDir = "PYRO_AGENT_SECRETS_DIR"

// tmpfsSize bounds the tmpfs: every secret at its largest, twice over (a
// value and its replacement exist at once during a put).
const tmpfsSize = "8m"

// tmpPrefix starts the temporary names values are written to.
const tmpPrefix = ".tmp-"

// ErrBadRequest wraps every refusal of invalid input.
var ErrBadRequest = errors.New("bad request")

// NotFoundError is returned for a secret that was never put.
type NotFoundError struct{ Name string }

func (e *NotFoundError) Error() string { return fmt.Sprintf("secret %q not found", e.Name) }

// Store is the secrets directory. The zero value is unusable; use New.
type Store struct {
	dir   string // "" off-VM: $PYRO_AGENT_SECRETS_DIR at each use
	mount bool   // mount a tmpfs on dir before the first put

	mu      sync.Mutex
	mounted bool
}

// New returns the store of a VM (mount: a tmpfs on dir, once per boot) or
// of an agent off-VM (no mount). An empty dir means $PYRO_AGENT_SECRETS_DIR.
func New(dir string, mount bool) *Store {
	return &Store{dir: dir, mount: mount}
}

// Dir returns the directory secrets are kept in, or an error when there is
// none (off-VM without $PYRO_AGENT_SECRETS_DIR).
func (s *Store) Dir() (string, error) {
	dir := s.dir
	if dir == "" {
		dir = os.Getenv(EnvDir)
	}
	if dir == "" || !filepath.IsAbs(dir) {
		return "", fmt.Errorf("no secrets directory (%s must name an absolute directory off-VM)", EnvDir)
	}
	return filepath.Clean(dir), nil
}

// ValidName says whether name may name a secret:
// ^[A-Za-z_][A-Za-z0-9_]{0,63}$.
func ValidName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	for i, c := range []byte(name) {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Parse validates a secrets_put payload: a JSON object of at most
// MaxSecrets names, each mapped to a string of at most MaxValueLen bytes.
func Parse(payload []byte) (map[string]string, error) {
	if len(payload) > MaxPayloadLen {
		return nil, fmt.Errorf("%w: payload over %d bytes", ErrBadRequest, MaxPayloadLen)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(payload, &raw); err != nil || raw == nil {
		return nil, fmt.Errorf("%w: payload must be a JSON object of names to strings", ErrBadRequest)
	}
	if len(raw) > MaxSecrets {
		return nil, fmt.Errorf("%w: %d secrets, at most %d allowed", ErrBadRequest, len(raw), MaxSecrets)
	}
	out := make(map[string]string, len(raw))
	for name, v := range raw {
		if !ValidName(name) {
			return nil, fmt.Errorf("%w: invalid secret name %q (want [A-Za-z_][A-Za-z0-9_]{0,63})", ErrBadRequest, clipName(name))
		}
		var value string
		if v = bytes.TrimSpace(v); len(v) == 0 || v[0] != '"' || json.Unmarshal(v, &value) != nil {
			return nil, fmt.Errorf("%w: the value of secret %q is not a string", ErrBadRequest, name)
		}
		if len(value) > MaxValueLen {
			return nil, fmt.Errorf("%w: the value of secret %q is over %d bytes", ErrBadRequest, name, MaxValueLen)
		}
		out[name] = value
	}
	return out, nil
}

// Put replaces the whole set of secrets with set (validated by Parse):
// each value is written to a new file and renamed over its name, then the
// files of names not in set are removed.
func (s *Store) Put(set map[string]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir, err := s.Dir()
	if err != nil {
		return err
	}
	if err := s.prepare(dir); err != nil {
		return err
	}
	names := make([]string, 0, len(set))
	for name := range set {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := writeSecret(dir, name, set[name]); err != nil {
			return fmt.Errorf("secret %q: %w", name, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, keep := set[e.Name()]; keep {
			continue
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s: %w", e.Name(), err)
		}
	}
	return nil
}

// prepare creates the directory, and in a VM mounts the tmpfs on it once.
func (s *Store) prepare(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if !s.mount || s.mounted {
		return nil
	}
	err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC,
		"mode=0700,uid=0,gid=0,size="+tmpfsSize)
	if err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	s.mounted = true
	return nil
}

func writeSecret(dir, name, value string) error {
	var rnd [8]byte
	if _, err := io.ReadFull(rand.Reader, rnd[:]); err != nil {
		return err
	}
	tmp := filepath.Join(dir, tmpPrefix+name+"-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o400)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(value)
	if werr == nil {
		werr = f.Chmod(0o400) // whatever the umask
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, filepath.Join(dir, name))
	}
	if werr != nil {
		os.Remove(tmp)
	}
	return werr
}

// Get returns the value of secret name.
func (s *Store) Get(name string) (string, error) {
	if !ValidName(name) {
		return "", fmt.Errorf("%w: invalid secret name %q", ErrBadRequest, clipName(name))
	}
	dir, err := s.Dir()
	if err != nil {
		return "", &NotFoundError{Name: name}
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", &NotFoundError{Name: name}
		}
		return "", fmt.Errorf("secret %q: %w", name, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return "", &NotFoundError{Name: name}
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxValueLen+1))
	if err != nil {
		return "", fmt.Errorf("secret %q: %w", name, err)
	}
	if len(b) > MaxValueLen {
		return "", fmt.Errorf("secret %q: over %d bytes", name, MaxValueLen)
	}
	return string(b), nil
}

// Resolve maps env names to the values of the secrets they name (the
// secret_env of a request). The names must have been validated.
func (s *Store) Resolve(secretEnv map[string]string) (map[string]string, error) {
	if len(secretEnv) == 0 {
		return nil, nil
	}
	envNames := make([]string, 0, len(secretEnv))
	for k := range secretEnv {
		envNames = append(envNames, k)
	}
	sort.Strings(envNames) // the same secret is reported first every time
	out := make(map[string]string, len(secretEnv))
	for _, k := range envNames {
		v, err := s.Get(secretEnv[k])
		if err != nil {
			return nil, err
		}
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("%w: secret %q holds a NUL byte, which an environment variable cannot", ErrBadRequest, secretEnv[k])
		}
		out[k] = v
	}
	return out, nil
}

func clipName(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}
