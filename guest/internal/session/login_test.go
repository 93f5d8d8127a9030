package session

import (
	"fmt"
	"os"
	"testing"

	"pyro/guest/internal/process"
)

// TestMain keeps the tester's own login files out of the login environment
// of shell commands: it is an empty HOME's.
func TestMain(m *testing.M) {
	home, err := os.MkdirTemp("", "pyro-login-home")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	process.SetLoginHome(home)
	code := m.Run()
	os.RemoveAll(home)
	os.Exit(code)
}
