package initsys

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"pyro/guest/internal/identity"
)

// NetConfig is the static IPv4 configuration passed on the kernel command
// line as pyro.ip=A.B.C.D/N pyro.gw=A.B.C.D pyro.dns=A.B.C.D pyro.mtu=N.
type NetConfig struct {
	Addr    [4]byte
	Mask    [4]byte
	Gateway *[4]byte // nil when pyro.gw is absent
	DNS     *[4]byte // nil when pyro.dns is absent
	// MTU is 0 when pyro.mtu is absent (the driver's default stays). The
	// host's network helper carries frames up to 65535 bytes, and large
	// frames are what make user-mode networking fast.
	MTU int
}

// ParseCmdline extracts the network configuration. ok is false when
// pyro.ip is absent (no configuration requested).
func ParseCmdline(cmdline string) (cfg NetConfig, ok bool, err error) {
	var ip, gw, dns, mtu string
	for _, f := range strings.Fields(cmdline) {
		switch {
		case strings.HasPrefix(f, "pyro.mtu="):
			mtu = strings.TrimPrefix(f, "pyro.mtu=")
		case strings.HasPrefix(f, "pyro.ip="):
			ip = strings.TrimPrefix(f, "pyro.ip=")
		case strings.HasPrefix(f, "pyro.gw="):
			gw = strings.TrimPrefix(f, "pyro.gw=")
		case strings.HasPrefix(f, "pyro.dns="):
			dns = strings.TrimPrefix(f, "pyro.dns=")
		}
	}
	if ip == "" {
		return NetConfig{}, false, nil
	}
	addr, ipnet, err := net.ParseCIDR(ip)
	if err != nil || addr.To4() == nil || len(ipnet.Mask) != net.IPv4len {
		return NetConfig{}, false, fmt.Errorf("pyro.ip=%q: want A.B.C.D/N", ip)
	}
	copy(cfg.Addr[:], addr.To4())
	copy(cfg.Mask[:], ipnet.Mask)
	if gw != "" {
		a, err := parseIPv4(gw)
		if err != nil {
			return NetConfig{}, false, fmt.Errorf("pyro.gw: %w", err)
		}
		cfg.Gateway = &a
	}
	if dns != "" {
		a, err := parseIPv4(dns)
		if err != nil {
			return NetConfig{}, false, fmt.Errorf("pyro.dns: %w", err)
		}
		cfg.DNS = &a
	}
	if mtu != "" {
		n, err := strconv.Atoi(mtu)
		if err != nil || n < 576 || n > 65535 {
			return NetConfig{}, false, fmt.Errorf("pyro.mtu=%q: want 576 to 65535", mtu)
		}
		cfg.MTU = n
	}
	return cfg, true, nil
}

func parseIPv4(s string) ([4]byte, error) {
	var a [4]byte
	ip := net.ParseIP(s).To4()
	if ip == nil {
		return a, fmt.Errorf("%q is not an IPv4 address", s)
	}
	copy(a[:], ip)
	return a, nil
}

// configureNetwork applies the command-line configuration to eth0.
func configureNetwork(logf func(string, ...any)) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		logf("network: %v", err)
		return
	}
	cfg, ok, err := ParseCmdline(string(b))
	if err != nil {
		logf("network: %v", err)
		return
	}
	if !ok {
		return
	}
	// virtio_net probes synchronously during module load, but give the
	// device a moment in case the driver is built in and still settling.
	if err := waitFor("/sys/class/net/eth0", eth0Wait); err != nil {
		logf("network: no eth0, skipping configuration")
		return
	}
	if err := ConfigureInterface("eth0", cfg); err != nil {
		logf("network: %v", err)
	}
	if cfg.DNS != nil {
		d := cfg.DNS
		content := fmt.Sprintf("nameserver %d.%d.%d.%d\n", d[0], d[1], d[2], d[3])
		if err := identity.WriteFileAtomic("/etc/resolv.conf", content, 0o644); err != nil {
			logf("network: resolv.conf: %v", err)
		}
	}
}

// ifreq layouts (struct ifreq is 40 bytes: a 16-byte name and a 24-byte
// union). Only the union members we use are spelled out.
type ifreqAddr struct {
	Name [syscall.IFNAMSIZ]byte
	Addr syscall.RawSockaddrInet4
	_    [8]byte
}

type ifreqFlags struct {
	Name  [syscall.IFNAMSIZ]byte
	Flags uint16
	_     [22]byte
}

type ifreqMTU struct {
	Name [syscall.IFNAMSIZ]byte
	MTU  int32
	_    [20]byte
}

const siocsifmtu = 0x8922

// rtentry mirrors struct rtentry from <linux/route.h>; unsigned long and
// pointers are uintptr so the layout matches on 32- and 64-bit targets.
type rtentry struct {
	pad1    uintptr
	dst     syscall.RawSockaddrInet4
	gateway syscall.RawSockaddrInet4
	genmask syscall.RawSockaddrInet4
	flags   uint16
	pad2    int16
	pad3    uintptr
	pad4    uintptr
	metric  int16
	dev     *byte
	mtu     uintptr
	window  uintptr
	irtt    uint16
}

func inet4(a [4]byte) syscall.RawSockaddrInet4 {
	return syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: a}
}

func ifname(name string) (n [syscall.IFNAMSIZ]byte, err error) {
	if len(name) == 0 || len(name) >= syscall.IFNAMSIZ {
		return n, fmt.Errorf("bad interface name %q", name)
	}
	copy(n[:], name)
	return n, nil
}

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), req, uintptr(arg)); e != 0 {
		return e
	}
	return nil
}

func inetSocket() (int, error) {
	return syscall.Socket(syscall.AF_INET, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
}

// LinkUp sets IFF_UP on an interface. For lo the kernel then adds
// 127.0.0.1/8 and ::1 by itself.
func LinkUp(name string) error {
	fd, err := inetSocket()
	if err != nil {
		return err
	}
	defer syscall.Close(fd)
	return linkUp(fd, name)
}

func linkUp(fd int, name string) error {
	n, err := ifname(name)
	if err != nil {
		return err
	}
	req := ifreqFlags{Name: n}
	if err := ioctl(fd, syscall.SIOCGIFFLAGS, unsafe.Pointer(&req)); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS %s: %w", name, err)
	}
	req.Flags |= syscall.IFF_UP
	if err := ioctl(fd, syscall.SIOCSIFFLAGS, unsafe.Pointer(&req)); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS %s: %w", name, err)
	}
	return nil
}

// ConfigureInterface assigns the address and netmask, brings the link up
// and adds the default route. The order matters: the kernel only accepts a
// gateway that is reachable through an interface that is up.
func ConfigureInterface(name string, cfg NetConfig) error {
	n, err := ifname(name)
	if err != nil {
		return err
	}
	fd, err := inetSocket()
	if err != nil {
		return err
	}
	defer syscall.Close(fd)

	addr := ifreqAddr{Name: n, Addr: inet4(cfg.Addr)}
	if err := ioctl(fd, syscall.SIOCSIFADDR, unsafe.Pointer(&addr)); err != nil {
		return fmt.Errorf("SIOCSIFADDR %s: %w", name, err)
	}
	mask := ifreqAddr{Name: n, Addr: inet4(cfg.Mask)}
	if err := ioctl(fd, syscall.SIOCSIFNETMASK, unsafe.Pointer(&mask)); err != nil {
		return fmt.Errorf("SIOCSIFNETMASK %s: %w", name, err)
	}
	if cfg.MTU > 0 {
		req := ifreqMTU{Name: n, MTU: int32(cfg.MTU)}
		if err := ioctl(fd, siocsifmtu, unsafe.Pointer(&req)); err != nil {
			return fmt.Errorf("SIOCSIFMTU %s %d: %w", name, cfg.MTU, err)
		}
	}
	if err := linkUp(fd, name); err != nil {
		return err
	}
	if cfg.Gateway == nil {
		return nil
	}
	dev := append([]byte(name), 0)
	rt := rtentry{
		dst:     inet4([4]byte{}),
		gateway: inet4(*cfg.Gateway),
		genmask: inet4([4]byte{}),
		flags:   syscall.RTF_UP | syscall.RTF_GATEWAY,
		dev:     &dev[0],
	}
	err = ioctl(fd, syscall.SIOCADDRT, unsafe.Pointer(&rt))
	if errors.Is(err, syscall.EEXIST) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("SIOCADDRT default via %d.%d.%d.%d: %w", cfg.Gateway[0], cfg.Gateway[1], cfg.Gateway[2], cfg.Gateway[3], err)
	}
	return nil
}
