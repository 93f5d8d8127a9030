// Package cgroup keeps the guest's commands in cgroups of their own, so a
// command can be stopped whole and cannot starve the agent: each command
// runs in commands/<n> under the cgroup v2 root, the commands group has a
// process limit, memory limits below the guest's total and a small CPU
// weight, and the agent (PID 1, in the root) keeps the rest. A timeout or a
// kill uses cgroup.kill, which ends every process of the command at once,
// fork bombs included.
package cgroup

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// Root is where the unified hierarchy is mounted.
const Root = "/sys/fs/cgroup"

const (
	commandsName = "commands"
	// PidsMax bounds the processes and threads of all commands together.
	PidsMax = 4096
	// CommandsWeight is the commands' CPU weight against the agent's
	// (a task in the root counts as weight 100).
	CommandsWeight = 10
)

var (
	mu      sync.Mutex
	enabled bool
	counter atomic.Uint64
)

// Setup mounts cgroup2, enables the controllers and makes the commands
// group with limits derived from memTotal (the guest's memory in bytes).
// Without it (an older kernel, a test off-VM) commands run as before and
// only their process group is signalled.
func Setup(memTotal int64) error {
	if err := os.MkdirAll(Root, 0o755); err != nil {
		return err
	}
	if err := syscall.Mount("cgroup2", Root, "cgroup2", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "nsdelegate"); err != nil && !errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("mount cgroup2: %w", err)
	}
	if err := write(filepath.Join(Root, "cgroup.subtree_control"), "+cpu +memory +pids"); err != nil {
		return err
	}
	dir := filepath.Join(Root, commandsName)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := write(filepath.Join(dir, "cgroup.subtree_control"), "+cpu +memory +pids"); err != nil {
		return err
	}
	settings := map[string]string{
		"pids.max":   strconv.Itoa(PidsMax),
		"cpu.weight": strconv.Itoa(CommandsWeight),
	}
	// Leave the kernel and the agent room: beyond "high" a command is
	// throttled (a memory hog stalls until its deadline), beyond "max" the
	// out-of-memory killer picks inside the commands, never the agent.
	const mib = 1 << 20
	if memTotal > 256*mib {
		settings["memory.high"] = strconv.FormatInt(memTotal-128*mib, 10)
		settings["memory.max"] = strconv.FormatInt(memTotal-64*mib, 10)
	}
	for name, value := range settings {
		if err := write(filepath.Join(dir, name), value); err != nil {
			return err
		}
	}
	// The agent itself: never the out-of-memory killer's choice.
	_ = write("/proc/self/oom_score_adj", "-1000")
	mu.Lock()
	enabled = true
	mu.Unlock()
	return nil
}

// Enabled says whether commands get cgroups.
func Enabled() bool {
	mu.Lock()
	defer mu.Unlock()
	return enabled
}

// Group is one command's cgroup.
type Group struct{ dir string }

// New makes the cgroup for the next command, after removing the groups of
// earlier commands that have no process left.
func New() (*Group, error) {
	if !Enabled() {
		return nil, errors.New("cgroups are not set up")
	}
	sweep()
	dir := filepath.Join(Root, commandsName, "c"+strconv.FormatUint(counter.Add(1), 10))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	// One command may use half of the processes: a fork bomb that outlives
	// its command leaves room for the next one.
	_ = write(filepath.Join(dir, "pids.max"), strconv.Itoa(PidsMax/2))
	return &Group{dir: dir}, nil
}

// NewNamed makes the cgroup commands/NAME for a shell or a service (names
// never look like a numbered command's, so sweeps leave them alone). A group
// of that name that is still there, holding what an earlier instance left
// behind, is reused.
func NewNamed(name string) (*Group, error) {
	if !Enabled() {
		return nil, errors.New("cgroups are not set up")
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || isNumbered(name) {
		return nil, fmt.Errorf("invalid cgroup name %q", name)
	}
	dir := filepath.Join(Root, commandsName, name)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, err
	}
	_ = write(filepath.Join(dir, "pids.max"), strconv.Itoa(PidsMax/2))
	return &Group{dir: dir}, nil
}

// Add moves a process into the group.
func (g *Group) Add(pid int) error {
	return write(filepath.Join(g.dir, "cgroup.procs"), strconv.Itoa(pid))
}

// Kill ends every process of the group at once. Without cgroup.kill (before
// Linux 5.14) each process listed is killed, a few rounds over.
func (g *Group) Kill() error {
	if err := write(filepath.Join(g.dir, "cgroup.kill"), "1"); err == nil {
		return nil
	}
	for round := 0; round < 10; round++ {
		b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.procs"))
		if err != nil {
			return err
		}
		pids := strings.Fields(string(b))
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return nil
}

// Populated says whether any process is still in the group.
func (g *Group) Populated() bool {
	b, err := os.ReadFile(filepath.Join(g.dir, "cgroup.events"))
	return err == nil && strings.Contains(string(b), "populated 1")
}

// Remove removes the group if no process is left in it (a command's
// background processes may outlive it; the next sweep takes the group then).
func (g *Group) Remove() {
	_ = syscall.Rmdir(g.dir)
}

func sweep() {
	entries, err := os.ReadDir(filepath.Join(Root, commandsName))
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.IsDir() && isNumbered(e.Name()) {
			_ = syscall.Rmdir(filepath.Join(Root, commandsName, e.Name()))
		}
	}
}

// isNumbered says whether name is a command's group (c1, c2, …).
func isNumbered(name string) bool {
	if len(name) < 2 || name[0] != 'c' {
		return false
	}
	for _, r := range name[1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func write(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(value)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("%s: %w", path, werr)
	}
	return cerr
}
