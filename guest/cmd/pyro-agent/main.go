// Command pyro-agent is the in-VM guest agent of pyro.
//
// As PID 1 (the initramfs /init) it boots the VM and serves the protocol on
// its virtio-serial ports. Otherwise it serves the same protocol on a unix
// socket, for tests: pyro-agent --listen unix:/path/to.sock.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"pyro/guest/internal/identity"
	"pyro/guest/internal/initsys"
	"pyro/guest/internal/ports"
	"pyro/guest/internal/protocol"
	"pyro/guest/internal/reaper"
	"pyro/guest/internal/secrets"
	"pyro/guest/internal/services"
	"pyro/guest/internal/session"
	"pyro/guest/internal/shells"
)

const portWait = 10 * time.Second

func main() {
	log.SetFlags(0)
	log.SetPrefix("pyro-agent: ")
	if os.Getpid() == 1 {
		// No flag parsing: the kernel hands init any unrecognised command
		// line words, and a parse error must not end PID 1.
		runPID1()
		return
	}
	listen := flag.String("listen", "", "serve on `unix:PATH` instead of virtio-serial ports (off-VM mode)")
	version := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	switch {
	case *version:
		fmt.Printf("pyro-agent %s (protocol %d)\n", protocol.AgentVersion, protocol.ProtocolVersion)
	case *listen != "":
		if err := runListen(*listen); err != nil {
			log.Print(err)
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "usage: pyro-agent --listen unix:PATH | --version (or run as PID 1)")
		os.Exit(2)
	}
}

func runPID1() {
	initsys.EnsureStdFDs()
	devErr := initsys.MountDev()
	initsys.SetupConsole()
	logf := log.Printf
	if devErr != nil {
		logf("%v", devErr)
	}
	defer func() {
		// Returning from main as PID 1 panics the kernel; powering off at
		// least makes the failure visible to the host as a VM exit.
		if p := recover(); p != nil {
			logf("fatal: %v", p)
		}
		initsys.PowerOff(logf)
	}()
	initsys.ShieldSignals(logf)
	rp := reaper.Start()
	if err := initsys.Boot(logf); err != nil {
		logf("boot failed: %v", err)
		return
	}
	opts := session.Options{
		PID1:     true,
		Identity: identity.Applier{Live: true},
		Reaper:   rp,
		PowerOff: func() { initsys.PowerOff(logf) },
		Logf:     logf,
		// Shared by every port: shells and services outlive sessions.
		Shells:   shells.NewRegistry(rp),
		Services: services.NewRegistry(rp),
		Secrets:  secrets.New(secrets.VMDir, true),
	}
	found, err := ports.Finder{}.Wait(portWait)
	if err != nil {
		logf("%v", err)
		return
	}
	served := map[string]bool{}
	for _, p := range found {
		served[p.Path] = true
		go servePort(p, opts)
	}
	logf("ready")
	// Pick up ports whose names the host announced late.
	for i := 0; i < 20; i++ {
		time.Sleep(500 * time.Millisecond)
		for _, p := range (ports.Finder{}).Scan() {
			if !served[p.Path] {
				served[p.Path] = true
				go servePort(p, opts)
			}
		}
	}
	select {}
}

// servePort serves one port forever; as PID 1 nothing may end this.
func servePort(p ports.Port, opts session.Options) {
	for {
		func() {
			defer func() {
				if r := recover(); r != nil {
					opts.Logf("port %s: panic: %v", p.Name, r)
				}
			}()
			f, err := ports.Open(p.Path)
			if err != nil {
				opts.Logf("port %s: %v", p.Name, err)
				return
			}
			defer f.Close()
			ports.Serve(f, opts, ports.PollInterval(p.Name), nil)
		}()
		time.Sleep(time.Second)
	}
}

func runListen(addr string) error {
	path := strings.TrimPrefix(addr, "unix:")
	if path == addr || path == "" {
		return fmt.Errorf("--listen %q: want unix:PATH", addr)
	}
	// Replace a stale socket from an earlier run, but never another file.
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return err
	}
	defer ln.Close()
	// Become a subreaper so orphaned background processes are reaped by us,
	// as they would be by PID 1 in the VM.
	_ = prctl(prSetChildSubreaper, 1)
	rp := reaper.Start()
	opts := session.Options{
		PID1:     false,
		Identity: identity.Applier{Live: false},
		Reaper:   rp,
		PowerOff: func() {
			os.Remove(path)
			os.Exit(0)
		},
		Logf:     log.Printf,
		Shells:   shells.NewRegistry(rp),
		Services: services.NewRegistry(rp),
		// $PYRO_AGENT_SECRETS_DIR; no tmpfs off-VM.
		Secrets: secrets.New("", false),
	}
	log.Print("ready")
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go serveConn(c, opts)
	}
}

func serveConn(c net.Conn, opts session.Options) {
	sc := session.NewConn(c, opts)
	defer func() {
		if r := recover(); r != nil {
			opts.Logf("connection: panic: %v", r)
		}
		c.Close() // unblocks the writer before it is stopped
		sc.Close()
	}()
	_ = sc.Serve(c)
}

const prSetChildSubreaper = 36

func prctl(option, arg uintptr) error {
	if _, _, e := syscall.Syscall(syscall.SYS_PRCTL, option, arg, 0); e != 0 {
		return e
	}
	return nil
}
