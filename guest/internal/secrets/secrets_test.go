package secrets

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"A", "_", "api_key", "K9", strings.Repeat("a", 64)} {
		if !ValidName(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", "9A", "a-b", "a.b", "a b", "ä", strings.Repeat("a", 65), "../x"} {
		if ValidName(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParse(t *testing.T) {
	if m, err := Parse([]byte(`{"A":"1","B_2":""}`)); err != nil || len(m) != 2 || m["A"] != "1" {
		t.Fatalf("%v %v", m, err)
	}
	many := "{"
	for i := 0; i < MaxSecrets+1; i++ {
		if i > 0 {
			many += ","
		}
		many += `"S` + strings.Repeat("x", i) + `":"v"`
	}
	many += "}"
	for _, bad := range []string{``, `null`, `[]`, `"x"`, `{"A":1}`, `{"a-b":"x"}`, `{"A":null}`,
		`{"A":"` + strings.Repeat("v", MaxValueLen+1) + `"}`, many} {
		_, err := Parse([]byte(bad))
		if !errors.Is(err, ErrBadRequest) {
			t.Errorf("%.40q: %v", bad, err)
		}
	}
	// A refusal never carries a value.
	_, err := Parse([]byte(`{"OK":"topsecret","bad name":"alsosecret"}`))
	if err == nil || strings.Contains(err.Error(), "secret\"") || strings.Contains(err.Error(), "topsecret") || strings.Contains(err.Error(), "alsosecret") {
		t.Fatalf("error %v", err)
	}
}

func TestPutGetResolve(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	s := New(dir, false)
	if err := s.Put(map[string]string{"API_KEY": "s3cret", "OTHER": "x"}); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "API_KEY"))
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("file mode %v %v", fi, err)
	}
	if v, err := s.Get("API_KEY"); err != nil || v != "s3cret" {
		t.Fatalf("%q %v", v, err)
	}
	env, err := s.Resolve(map[string]string{"K": "API_KEY", "O": "OTHER"})
	if err != nil || env["K"] != "s3cret" || env["O"] != "x" {
		t.Fatalf("%v %v", env, err)
	}
	// A new set replaces the old one: names not in it are removed.
	if err := s.Put(map[string]string{"OTHER": "y"}); err != nil {
		t.Fatal(err)
	}
	var nf *NotFoundError
	if _, err := s.Get("API_KEY"); !errors.As(err, &nf) || nf.Name != "API_KEY" {
		t.Fatalf("removed secret: %v", err)
	}
	if _, err := s.Resolve(map[string]string{"K": "API_KEY"}); !errors.As(err, &nf) {
		t.Fatalf("resolve: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != "OTHER" {
		t.Fatalf("left in the directory: %v", entries)
	}
	if v, _ := s.Get("OTHER"); v != "y" {
		t.Fatalf("OTHER = %q", v)
	}
	// A value with a NUL cannot go into an environment.
	if err := s.Put(map[string]string{"NUL": "a\x00b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(map[string]string{"K": "NUL"}); !errors.Is(err, ErrBadRequest) || strings.Contains(err.Error(), "a\x00b") {
		t.Fatalf("resolve NUL: %v", err)
	}
}

func TestNoDirectory(t *testing.T) {
	t.Setenv(EnvDir, "")
	s := New("", false)
	if err := s.Put(map[string]string{"A": "b"}); err == nil {
		t.Fatal("put without a directory succeeded")
	}
	var nf *NotFoundError
	if _, err := s.Get("A"); !errors.As(err, &nf) {
		t.Fatalf("get: %v", err)
	}
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	if err := s.Put(map[string]string{"A": "b"}); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Get("A"); err != nil || v != "b" {
		t.Fatalf("%q %v", v, err)
	}
}
