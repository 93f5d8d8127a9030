// Command pyro-netd is pyro's network helper for one VM. It runs on the
// host, as the unprivileged user QEMU runs as, for as long as that VM's
// QEMU: it listens on a unix socket for QEMU's stream network backend,
// starts passt (user-mode networking) on a socket pair of its own, and
// relays Ethernet frames between them, forwarding from the guest only what
// the VM's policy allows and answering the guest's DNS itself. It exits
// when QEMU goes away.
//
//	pyro-netd --socket PATH --policy JSON [--user UID:GID] [--passt PATH] [--ready-fd 3]
//
// Started as root (pyro's own binary need not be reachable by the QEMU
// user), it makes its socket, hands it to --user, and drops to that user
// before it reads a single frame.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"pyro/netd/internal/policy"
	"pyro/netd/internal/relay"
)

// PasstMAC is the address passt answers the guest with (its gateway and resolver).
const PasstMAC = "52:56:00:00:00:02"

func main() {
	log.SetFlags(0)
	log.SetPrefix("pyro-netd: ")
	socket := flag.String("socket", "", "unix socket QEMU's -netdev stream connects to")
	policyJSON := flag.String("policy", "", "the VM's network policy (JSON)")
	passt := flag.String("passt", "passt", "passt binary")
	readyFd := flag.Int("ready-fd", -1, "write \"ready\" to this fd once listening, then close it")
	user := flag.String("user", "", "`UID:GID` to run as once the socket exists (when started as root)")
	acceptTimeout := flag.Duration("accept-timeout", 2*time.Minute, "exit if QEMU has not connected by then")
	printBlocked := flag.Bool("print-blocked", false, "print the always-blocked ranges as JSON and exit")
	flag.Parse()
	if *printBlocked {
		out, _ := json.Marshal(policy.BlockedRanges())
		fmt.Println(string(out))
		return
	}
	if *socket == "" || *policyJSON == "" {
		fmt.Fprintln(os.Stderr, "usage: pyro-netd --socket PATH --policy JSON [--passt PATH] [--ready-fd N]")
		os.Exit(2)
	}
	if err := run(*socket, *policyJSON, *passt, *user, *readyFd, *acceptTimeout); err != nil && !errors.Is(err, io.EOF) {
		log.Print(err)
		os.Exit(1)
	}
}

func run(socket, policyJSON, passt, user string, readyFd int, acceptTimeout time.Duration) error {
	cfg, err := policy.Parse([]byte(policyJSON))
	if err != nil {
		return err
	}
	_ = os.Remove(socket)
	listener, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		return err
	}
	defer listener.Close()
	if err := os.Chmod(socket, 0o600); err != nil {
		return err
	}
	if user != "" {
		if err := becomeUser(socket, user); err != nil {
			return err
		}
	}
	if readyFd >= 0 {
		ready := os.NewFile(uintptr(readyFd), "ready")
		_, _ = ready.WriteString("ready\n")
		_ = ready.Close()
	}
	_ = listener.SetDeadline(time.Now().Add(acceptTimeout))
	guest, err := listener.AcceptUnix()
	if err != nil {
		return fmt.Errorf("waiting for QEMU: %w", err)
	}
	// One QEMU per helper: nobody else may connect.
	listener.Close()
	defer guest.Close()

	rules := policy.New(cfg, hostAddrs)
	network, child, err := startPasst(passt, cfg, rules.LoopbackOpen())
	if err != nil {
		return err
	}
	defer func() {
		network.Close()
		_ = child.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = child.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = child.Process.Kill()
			<-done
		}
	}()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		<-stop
		guest.Close()
		network.Close()
	}()

	r := &relay.Relay{
		Guest:   guest,
		Net:     network,
		Policy:  rules,
		Resolve: resolve,
		Events:  relay.NewEvents(os.Stdout, 1000),
	}
	return r.Run()
}

// startPasst runs passt on one end of a socket pair and returns the other.
// passt gets the guest's fixed addresses, no DHCP, NDP or IPv6, no DNS of
// its own (the helper answers DNS), no inbound ports, and maps the gateway
// to the host's loopback only when the operator opened a loopback port.
func startPasst(passt string, cfg *policy.Config, loopback bool) (net.Conn, *exec.Cmd, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	ours := os.NewFile(uintptr(fds[0]), "passt-side")
	theirs := os.NewFile(uintptr(fds[1]), "passt")
	defer theirs.Close()
	args := []string{
		"--foreground", "--quiet", "--stderr", "--ipv4-only",
		"--fd", "3",
		"--address", cfg.GuestIP.String(), "--netmask", "24", "--gateway", cfg.Gateway.String(),
		"--mac-addr", PasstMAC,
		"--no-dhcp", "--no-ndp", "--no-dhcpv6", "--no-ra", "--dns", "none",
		"--tcp-ports", "none", "--udp-ports", "none",
	}
	if !loopback {
		args = append(args, "--no-map-gw")
	}
	cmd := exec.Command(passt, args...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("starting passt: %w", err)
	}
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, nil, err
	}
	return conn, cmd, nil
}

// becomeUser gives the socket to uid:gid and drops to that user for good:
// no groups, no way back, no new privileges.
func becomeUser(socket, user string) error {
	var uid, gid int
	if _, err := fmt.Sscanf(user, "%d:%d", &uid, &gid); err != nil || uid <= 0 || gid <= 0 {
		return fmt.Errorf("--user %q: want UID:GID of an unprivileged user", user)
	}
	if err := os.Lchown(socket, uid, gid); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("setgid: %w", err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("setuid: %w", err)
	}
	const prSetNoNewPrivs = 38
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); errno != 0 {
		return fmt.Errorf("no_new_privs: %w", errno)
	}
	if os.Getuid() != uid || os.Geteuid() != uid {
		return errors.New("could not drop privileges")
	}
	return nil
}

func hostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		if ipnet, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipnet.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

func resolve(ctx context.Context, name string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip4", name)
}
