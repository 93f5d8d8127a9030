// Command pyro-launch starts QEMU (through its sandbox) with what must be
// set before the first instruction of it runs, which pyro's own Node.js
// process cannot do for a child:
//
//   - transparent huge pages off for the process and all it starts
//     (PR_SET_THP_DISABLE): QEMU asks for huge pages for guest RAM, so a
//     restore that writes a few scattered pages would otherwise fill whole
//     2 MiB pages, and a restored 1 GiB guest would hold 1 GiB;
//
//   - membership of the VM's cgroup, joined before exec, so nothing of the
//     sandbox or QEMU ever runs outside its limits.
//
//     pyro-launch [--cgroup DIR]... -- PROGRAM [ARG]...
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

const prSetTHPDisable = 41

func main() {
	args := os.Args[1:]
	var cgroups []string
	for len(args) > 0 && args[0] != "--" {
		if args[0] != "--cgroup" || len(args) < 2 {
			usage()
		}
		cgroups = append(cgroups, args[1])
		args = args[2:]
	}
	if len(args) < 2 {
		usage()
	}
	program, argv := args[1], args[1:]
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetTHPDisable, 1, 0); errno != 0 {
		fail("PR_SET_THP_DISABLE: %v", errno)
	}
	for _, dir := range cgroups {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
			fail("joining cgroup %s: %v", dir, err)
		}
	}
	if err := syscall.Exec(program, argv, os.Environ()); err != nil {
		fail("exec %s: %v", program, err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: pyro-launch [--cgroup DIR]... -- PROGRAM [ARG]...")
	os.Exit(2)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "pyro-launch: "+format+"\n", args...)
	os.Exit(127)
}
