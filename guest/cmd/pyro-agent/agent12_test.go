package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startAgent runs the binary off-VM with extra environment and returns its
// socket; the agent is killed at test end.
func startAgent(t *testing.T, bin string, env ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	cmd := exec.Command(bin, "--listen", "unix:"+sock)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if sc.Text() == "pyro-agent: ready" {
				close(ready)
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	select {
	case <-ready:
	case <-time.After(5 * time.Second):
		t.Fatal("agent never printed ready")
	}
	return sock
}

func TestEndToEndShellsServicesSecretsTCP(t *testing.T) {
	bin := buildAgent(t)
	secretsDir := filepath.Join(t.TempDir(), "secrets")
	sock := startAgent(t, bin, "PYRO_AGENT_SECRETS_DIR="+secretsDir)
	a := dial(t, sock)
	a.send(map[string]any{"type": "hello", "id": 1, "nonce": "n"}, nil)
	if h := a.expect("hello_ok", 1); h.str("agent_version") != "1.4.0" {
		t.Fatalf("hello_ok %v", h.h)
	}
	home := map[string]string{"HOME": t.TempDir()}

	// Secrets into an exec.
	payload, _ := json.Marshal(map[string]string{"TOKEN": "e2e-secret"})
	a.send(map[string]any{"type": "secrets_put", "id": 2}, payload)
	if r := a.expect("ok", 2); r.num("count") != 1 {
		t.Fatal(r.h)
	}
	a.send(map[string]any{"type": "exec", "id": 3, "shell": "echo $T", "timeout_ms": 5000, "max_output_bytes": 100,
		"env": home, "secret_env": map[string]string{"T": "TOKEN"}}, nil)
	if so, _, exit := a.runExec(3); so != "e2e-secret\n" || exit.num("exit_code") != 0 {
		t.Fatalf("exec %q %v", so, exit.h)
	}

	// Agent 1.3: a shell command's env and secret_env win over the login
	// environment (Debian's /etc/profile sets PATH unconditionally).
	if _, err := os.Stat("/bin/bash"); err == nil {
		a.send(map[string]any{"type": "exec", "id": 35, "shell": `echo "$PATH|$T|$0"`, "timeout_ms": 5000, "max_output_bytes": 100,
			"env": map[string]string{"PATH": "/custom/bin:/usr/bin:/bin", "T": "plain"}, "secret_env": map[string]string{"T": "TOKEN"}}, nil)
		if so, _, exit := a.runExec(35); so != "/custom/bin:/usr/bin:/bin|e2e-secret|bash\n" || exit.num("exit_code") != 0 {
			t.Fatalf("exec %q %v", so, exit.h)
		}
	}

	// A shell, with the secret too.
	a.send(map[string]any{"type": "shell_open", "id": 4, "cols": 100, "rows": 30, "env": home,
		"secret_env": map[string]string{"S": "TOKEN"}}, nil)
	shellID := a.expect("ok", 4).str("shell_id")
	a.send(map[string]any{"type": "shell_write", "id": 5, "shell_id": shellID}, []byte("tty; echo $S-$((2*3))\n"))
	a.expect("ok", 5)
	var out string
	cursor := 0.0
	for id := 6.0; !strings.Contains(out, "e2e-secret-6"); id++ {
		if id > 30 {
			t.Fatalf("shell output %q", out)
		}
		a.send(map[string]any{"type": "shell_read", "id": id, "shell_id": shellID, "cursor": cursor, "max_bytes": 65536, "wait_ms": 1000}, nil)
		r := a.expect("ok", id)
		out += string(r.payload)
		cursor = r.num("next_cursor")
	}
	if !regexp.MustCompile(`/dev/pts/\d+`).MatchString(out) {
		t.Fatalf("shell output %q", out)
	}

	// A service, seen from another connection.
	a.send(map[string]any{"type": "service_start", "id": 40, "name": "e2e", "shell": "echo up; sleep 30", "env": home}, nil)
	a.expect("ok", 40)
	b := dial(t, sock)
	b.send(map[string]any{"type": "hello", "id": 1, "nonce": "b"}, nil)
	b.expect("hello_ok", 1)
	for id := 2.0; ; id++ {
		b.send(map[string]any{"type": "service_logs", "id": id, "name": "e2e", "max_bytes": 100}, nil)
		if r := b.expect("ok", id); string(r.payload) == "up\n" {
			break
		}
		if id > 100 {
			t.Fatal("service output never arrived")
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.send(map[string]any{"type": "service_stop", "id": 200, "name": "e2e"}, nil)
	if r := b.expect("ok", 200); r.num("exit_code") != 143 || r.str("signal") != "SIGTERM" {
		t.Fatal(r.h)
	}

	// A forwarded connection to an echo server.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(c, c)
		c.Close()
	}()
	a.send(map[string]any{"type": "tcp_open", "id": 50, "port": ln.Addr().(*net.TCPAddr).Port}, nil)
	a.expect("tcp_opened", 50)
	a.send(map[string]any{"type": "tcp_send", "id": 51, "target": 50}, []byte("ping over tcp"))
	if r := a.expect("tcp_data", 50); string(r.payload) != "ping over tcp" {
		t.Fatalf("tcp_data %q", r.payload)
	}
	a.send(map[string]any{"type": "tcp_shutdown", "id": 52, "target": 50}, nil)
	a.expect("tcp_eof", 50)
	a.expect("tcp_closed", 50)

	a.send(map[string]any{"type": "shell_close", "id": 60, "shell_id": shellID}, nil)
	a.expect("ok", 60)
	a.send(map[string]any{"type": "service_remove", "id": 61, "name": "e2e"}, nil)
	a.expect("ok", 61)
}
