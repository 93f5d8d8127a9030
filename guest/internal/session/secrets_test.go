package session

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pyro/guest/internal/secrets"
)

func TestSecrets(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")
	c := newClient(t, Options{Secrets: secrets.New(dir, false)})
	c.hello(1, "n")
	put := func(id int64, set map[string]string) msg {
		b, _ := json.Marshal(set)
		c.send(map[string]any{"type": "secrets_put", "id": id}, b)
		return c.next()
	}
	if m := put(2, map[string]string{"API_KEY": "s3cr3t-value", "TOKEN": "tok"}); m.typ() != "ok" || m.num("count") != 2 {
		t.Fatal(m)
	}
	if fi, err := os.Stat(filepath.Join(dir, "API_KEY")); err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("%v %v", fi, err)
	}

	// exec: secrets after env, which they override.
	c.send(map[string]any{"type": "exec", "id": 3, "shell": `echo "$K/$T/$PLAIN"`, "timeout_ms": 5000, "max_output_bytes": 1000,
		"env":        map[string]string{"HOME": os.TempDir(), "PLAIN": "p", "K": "overridden"},
		"secret_env": map[string]string{"K": "API_KEY", "T": "TOKEN"}}, nil)
	if r := c.collect(3)[3]; r.stdout != "s3cr3t-value/tok/p\n" {
		t.Fatalf("exec got %q", r.stdout)
	}

	// A shell.
	ids := &seq{n: 100}
	sh, _ := c.openShell(ids, map[string]any{"secret_env": map[string]string{"MY_SECRET": "TOKEN"}})
	var cur int64
	c.readUntil(ids, sh, &cur, "# ")
	c.run(ids, sh, &cur, `echo "[$MY_SECRET]"`, "[tok]")

	// A service.
	c.send(map[string]any{"type": "service_start", "id": 4, "name": "with-secret", "shell": `echo "<$S>"`,
		"env": map[string]string{"HOME": os.TempDir()}, "secret_env": map[string]string{"S": "API_KEY"}}, nil)
	c.expect("ok", 4)
	defer c.send(map[string]any{"type": "service_remove", "id": 9998, "name": "with-secret"}, nil)
	for i := 0; ; i++ {
		l := c.serviceLogs(ids, "with-secret", nil)
		if string(l.payload) == "<s3cr3t-value>\n" {
			break
		}
		if i > 200 {
			t.Fatalf("service logs %q", l.payload)
		}
		c.shellRead(ids, sh, cur, map[string]any{"wait_ms": 20}) // a pause
	}

	// Unknown secrets fail the request, naming the secret only.
	reqs := []map[string]any{
		{"type": "exec", "id": 5, "argv": []string{"true"}, "timeout_ms": 5000, "max_output_bytes": 0, "secret_env": map[string]string{"X": "NOPE"}},
		{"type": "shell_open", "id": 6, "cols": 80, "rows": 24, "secret_env": map[string]string{"X": "NOPE", "Y": "API_KEY"}},
		{"type": "service_start", "id": 7, "name": "nope", "shell": "true", "secret_env": map[string]string{"X": "NOPE"}},
	}
	for _, req := range reqs {
		c.send(req, nil)
		id := int64(req["id"].(int))
		m := c.expect("error", id)
		if m.str("code") != "secret_not_found" || !strings.Contains(m.str("message"), "NOPE") || strings.Contains(m.str("message"), "s3cr3t") {
			t.Errorf("%v: %v", req["type"], m)
		}
	}
	// The exec did not run and nothing else came.
	c.send(map[string]any{"type": "ping", "id": 8}, nil)
	c.expect("ok", 8)

	// A new set replaces the old one.
	if m := put(9, map[string]string{"TOKEN": "tok2"}); m.typ() != "ok" || m.num("count") != 1 {
		t.Fatal(m)
	}
	c.send(map[string]any{"type": "exec", "id": 10, "argv": []string{"true"}, "timeout_ms": 5000, "max_output_bytes": 0,
		"secret_env": map[string]string{"K": "API_KEY"}}, nil)
	if m := c.expect("error", 10); m.str("code") != "secret_not_found" {
		t.Fatal(m)
	}

	// Invalid payloads.
	for i, payload := range []string{"", "[]", `{"a-b":"x"}`, `{"A":1}`, `{"A":"` + strings.Repeat("x", 64<<10+1) + `"}`} {
		id := int64(20 + i)
		c.send(map[string]any{"type": "secrets_put", "id": id}, []byte(payload))
		if m := c.expect("error", id); m.str("code") != "bad_request" {
			t.Errorf("payload %.20q: %v", payload, m)
		}
	}
	// Invalid secret_env.
	c.send(map[string]any{"type": "exec", "id": 30, "argv": []string{"true"}, "timeout_ms": 5000, "max_output_bytes": 0,
		"secret_env": map[string]string{"A=B": "TOKEN"}}, nil)
	if m := c.expect("error", 30); m.str("code") != "bad_request" {
		t.Fatal(m)
	}
}
