package protocol

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Message types.
const (
	TypeHello    = "hello"
	TypeHelloOK  = "hello_ok"
	TypeExec     = "exec"
	TypeStarted  = "started"
	TypeOutput   = "output"
	TypeExit     = "exit"
	TypeKill     = "kill"
	TypePing     = "ping"
	TypePoweroff = "poweroff"
	TypeOK       = "ok"
	TypeError    = "error"

	TypePutTar     = "put_tar"
	TypePutTarData = "put_tar_data"
	TypePutTarEnd  = "put_tar_end"

	TypeFsList    = "fs_list"
	TypeFsEntries = "fs_entries"
	TypeFsRead    = "fs_read"
	TypeFsWrite   = "fs_write"
	TypeFsRemove  = "fs_remove"
	TypeGetTar    = "get_tar"
	TypeTarData   = "tar_data"
	TypeSync      = "sync"

	TypeSecretsPut = "secrets_put"

	TypeShellOpen   = "shell_open"
	TypeShellRead   = "shell_read"
	TypeShellWrite  = "shell_write"
	TypeShellResize = "shell_resize"
	TypeShellSignal = "shell_signal"
	TypeShellClose  = "shell_close"
	TypeShellList   = "shell_list"

	TypeServiceStart  = "service_start"
	TypeServiceStatus = "service_status"
	TypeServiceLogs   = "service_logs"
	TypeServiceStop   = "service_stop"
	TypeServiceRemove = "service_remove"
	TypeProbe         = "probe"

	TypeTCPOpen     = "tcp_open"
	TypeTCPOpened   = "tcp_opened"
	TypeTCPData     = "tcp_data"
	TypeTCPEOF      = "tcp_eof"
	TypeTCPClosed   = "tcp_closed"
	TypeTCPSend     = "tcp_send"
	TypeTCPShutdown = "tcp_shutdown"
	TypeTCPClose    = "tcp_close"
)

// Error codes.
const (
	CodeBadRequest  = "bad_request"
	CodeExecFailed  = "exec_failed"
	CodeNotFound    = "not_found"
	CodeHelloFailed = "hello_failed"
	CodeBadArchive  = "bad_archive"
	CodeTooLarge    = "too_large"
	CodeIOError     = "io_error"
	CodeOutside     = "outside_root"
	CodeWrongType   = "wrong_type"

	CodeSecretNotFound = "secret_not_found"
	CodeTooMany        = "too_many"
	CodeShellExited    = "shell_exited"
	CodeAlreadyExists  = "already_exists"
	CodeConnectFailed  = "connect_failed"
	CodeKillFailed     = "kill_failed"
)

// MaxEntropyLen bounds the hello payload.
const MaxEntropyLen = 4096

// ParseEnvelope extracts the mandatory type and id of a header. If the id is
// present and valid it is returned even when the type is not, so that the
// error reply can carry it; otherwise id is 0, as PROTOCOL.md requires.
func ParseEnvelope(header []byte) (typ string, id uint64, err error) {
	var env struct {
		Type json.RawMessage `json:"type"`
		ID   json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal(header, &env); err != nil {
		return "", 0, fmt.Errorf("header: %v", err)
	}
	if env.ID == nil {
		return "", 0, errors.New("header: missing id")
	}
	// Unmarshalling into uint64 rejects negative, fractional and exponent
	// forms, which is exactly "non-negative integer".
	if err := json.Unmarshal(env.ID, &id); err != nil {
		return "", 0, errors.New("header: id must be a non-negative integer")
	}
	if env.Type == nil {
		return "", id, errors.New("header: missing type")
	}
	if err := json.Unmarshal(env.Type, &typ); err != nil {
		return "", id, errors.New("header: type must be a string")
	}
	return typ, id, nil
}

// Hello is the body of a hello request. Pointers distinguish "absent".
type Hello struct {
	Nonce      *string `json:"nonce"`
	TimeUnixMs *int64  `json:"time_unix_ms"`
	Hostname   *string `json:"hostname"`
	MachineID  *string `json:"machine_id"`
}

// HelloOK is the reply to a successful hello.
type HelloOK struct {
	Type         string `json:"type"`
	ID           uint64 `json:"id"`
	Nonce        string `json:"nonce"`
	AgentVersion string `json:"agent_version"`
	Protocol     int    `json:"protocol"`
	BootID       string `json:"boot_id"`
	PID1         bool   `json:"pid1"`
}

// Exec is the body of an exec request.
type Exec struct {
	Argv           []string          `json:"argv"`
	Shell          *string           `json:"shell"`
	Cwd            *string           `json:"cwd"`
	Env            map[string]string `json:"env"`
	TimeoutMs      *int64            `json:"timeout_ms"`
	MaxOutputBytes *int64            `json:"max_output_bytes"`
	// SecretEnv maps environment variables to the secrets they get.
	SecretEnv map[string]string `json:"secret_env"`
	// Sync flushes every filesystem to disk before the exit reply, so
	// what the command wrote survives the VM being killed right after.
	Sync bool `json:"sync"`
}

// Started is the first reply to a successful exec.
type Started struct {
	Type string `json:"type"`
	ID   uint64 `json:"id"`
	Pid  int    `json:"pid"`
}

// Output carries one chunk of a stream in the frame payload.
type Output struct {
	Type   string `json:"type"`
	ID     uint64 `json:"id"`
	Stream string `json:"stream"`
}

// Exit is the last reply to a successful exec.
type Exit struct {
	Type            string  `json:"type"`
	ID              uint64  `json:"id"`
	ExitCode        int     `json:"exit_code"`
	Signal          *string `json:"signal"` // null unless killed by a signal
	TimedOut        bool    `json:"timed_out"`
	DurationMs      int64   `json:"duration_ms"`
	StdoutBytes     int64   `json:"stdout_bytes"`
	StderrBytes     int64   `json:"stderr_bytes"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	StderrTruncated bool    `json:"stderr_truncated"`
}

// Kill is the body of a kill request.
type Kill struct {
	Target *uint64 `json:"target"`
	Signal *string `json:"signal"`
}

// PutTar is the body of a put_tar request; the payload is the first chunk
// of the archive.
type PutTar struct {
	Dest       *string `json:"dest"`
	MaxBytes   *int64  `json:"max_bytes"`
	MaxEntries *int64  `json:"max_entries"`
}

// PutTarOK is the reply to a put_tar whose tree was put into place.
type PutTarOK struct {
	Type     string `json:"type"`
	ID       uint64 `json:"id"`
	Files    int64  `json:"files"`
	Dirs     int64  `json:"dirs"`
	Symlinks int64  `json:"symlinks"`
	Bytes    int64  `json:"bytes"`
}

// OK is the generic success reply.
type OK struct {
	Type string `json:"type"`
	ID   uint64 `json:"id"`
}

// Error is the generic failure reply. Nonce is only set on replies to hello,
// so that a host which discards everything but its own nonce can still
// recognise a failed hello.
type Error struct {
	Type    string `json:"type"`
	ID      uint64 `json:"id"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Nonce   string `json:"nonce,omitempty"`
}

// FsRequest is the body of fs_list, fs_read, fs_write, fs_remove and
// get_tar: paths are relative to Root, an absolute directory.
type FsRequest struct {
	Root         *string  `json:"root"`
	Path         *string  `json:"path"`
	Paths        []string `json:"paths"`
	Recursive    bool     `json:"recursive"`
	Hash         bool     `json:"hash"`
	HashMaxBytes *int64   `json:"hash_max_bytes"`
	MaxEntries   *int64   `json:"max_entries"`
	MaxBytes     *int64   `json:"max_bytes"`
	Mode         *uint32  `json:"mode"`
}

// FsListOK ends an fs_list, after its fs_entries frames.
type FsListOK struct {
	Type      string `json:"type"`
	ID        uint64 `json:"id"`
	Count     int    `json:"count"`
	Truncated bool   `json:"truncated"`
}

// FsReadOK carries a file's content as payload.
type FsReadOK struct {
	Type      string `json:"type"`
	ID        uint64 `json:"id"`
	Size      int64  `json:"size"`
	Mode      uint32 `json:"mode"`
	MtimeMs   int64  `json:"mtime_ms"`
	Truncated bool   `json:"truncated"`
}

// FsWriteOK ends an fs_write.
type FsWriteOK struct {
	Type    string `json:"type"`
	ID      uint64 `json:"id"`
	Existed bool   `json:"existed"`
}

// GetTarOK ends a get_tar, after its tar_data frames.
type GetTarOK struct {
	Type     string `json:"type"`
	ID       uint64 `json:"id"`
	Files    int64  `json:"files"`
	Dirs     int64  `json:"dirs"`
	Symlinks int64  `json:"symlinks"`
	Bytes    int64  `json:"bytes"`
	Skipped  int64  `json:"skipped"`
}

// SecretsPutOK is the reply to secrets_put.
type SecretsPutOK struct {
	Type  string `json:"type"`
	ID    uint64 `json:"id"`
	Count int    `json:"count"`
}

// ShellRequest is the body of every shell_* request; each uses some of
// the fields. Pointers distinguish "absent".
type ShellRequest struct {
	ShellID       *string           `json:"shell_id"`
	Cwd           *string           `json:"cwd"`
	Cols          *int64            `json:"cols"`
	Rows          *int64            `json:"rows"`
	Env           map[string]string `json:"env"`
	SecretEnv     map[string]string `json:"secret_env"`
	Cursor        *int64            `json:"cursor"`
	MaxBytes      *int64            `json:"max_bytes"`
	WaitForIdleMs *int64            `json:"wait_for_idle_ms"`
	WaitMs        *int64            `json:"wait_ms"`
	Signal        *string           `json:"signal"`
}

// ShellOpenOK is the reply to shell_open.
type ShellOpenOK struct {
	Type    string `json:"type"`
	ID      uint64 `json:"id"`
	ShellID string `json:"shell_id"`
	Pid     int    `json:"pid"`
}

// ShellReadOK carries the output from start to next_cursor as payload.
// ExitCode and Signal are only present once the shell has exited (Signal
// only when a signal ended it).
type ShellReadOK struct {
	Type         string  `json:"type"`
	ID           uint64  `json:"id"`
	Start        int64   `json:"start"`
	NextCursor   int64   `json:"next_cursor"`
	DroppedBytes int64   `json:"dropped_bytes"`
	End          int64   `json:"end"`
	IdleMs       int64   `json:"idle_ms"`
	State        string  `json:"state"`
	ExitCode     *int    `json:"exit_code,omitempty"`
	Signal       *string `json:"signal,omitempty"`
}

// Shell and service states.
const (
	StateRunning = "running"
	StateExited  = "exited"
)

// ShellSignalOK is the reply to shell_signal.
type ShellSignalOK struct {
	Type string `json:"type"`
	ID   uint64 `json:"id"`
	Pgid int    `json:"pgid"`
}

// ExitOK is the reply to shell_close and service_stop: how it ended.
type ExitOK struct {
	Type     string  `json:"type"`
	ID       uint64  `json:"id"`
	ExitCode int     `json:"exit_code"`
	Signal   *string `json:"signal"` // null unless killed by a signal
}

// ShellInfo is one entry of shell_list.
type ShellInfo struct {
	ShellID       string  `json:"shell_id"`
	Pid           int     `json:"pid"`
	Cols          int     `json:"cols"`
	Rows          int     `json:"rows"`
	Cwd           string  `json:"cwd"`
	State         string  `json:"state"`
	ExitCode      *int    `json:"exit_code,omitempty"`
	Signal        *string `json:"signal,omitempty"`
	End           int64   `json:"end"`
	StartedUnixMs int64   `json:"started_unix_ms"`
}

// ShellListOK is the reply to shell_list.
type ShellListOK struct {
	Type   string      `json:"type"`
	ID     uint64      `json:"id"`
	Shells []ShellInfo `json:"shells"`
}

// ServiceRequest is the body of every service_* request; each uses some
// of the fields.
type ServiceRequest struct {
	Name      *string           `json:"name"`
	Shell     *string           `json:"shell"`
	Cwd       *string           `json:"cwd"`
	Env       map[string]string `json:"env"`
	SecretEnv map[string]string `json:"secret_env"`
	TailLines *int64            `json:"tail_lines"`
	MaxBytes  *int64            `json:"max_bytes"`
	GraceMs   *int64            `json:"grace_ms"`
}

// ServiceStartOK is the reply to service_start.
type ServiceStartOK struct {
	Type          string `json:"type"`
	ID            uint64 `json:"id"`
	Pid           int    `json:"pid"`
	StartedUnixMs int64  `json:"started_unix_ms"`
}

// ServiceInfo is one entry of service_status.
type ServiceInfo struct {
	Name          string  `json:"name"`
	Command       string  `json:"command"`
	Pid           int     `json:"pid"`
	State         string  `json:"state"`
	ExitCode      *int    `json:"exit_code,omitempty"`
	Signal        *string `json:"signal,omitempty"`
	StartedUnixMs int64   `json:"started_unix_ms"`
	EndedUnixMs   *int64  `json:"ended_unix_ms,omitempty"`
	OutputBytes   int64   `json:"output_bytes"`
}

// ServiceStatusOK is the reply to service_status.
type ServiceStatusOK struct {
	Type     string        `json:"type"`
	ID       uint64        `json:"id"`
	Services []ServiceInfo `json:"services"`
}

// ServiceLogsOK carries the selected output as payload.
type ServiceLogsOK struct {
	Type         string `json:"type"`
	ID           uint64 `json:"id"`
	DroppedBytes int64  `json:"dropped_bytes"`
	TotalBytes   int64  `json:"total_bytes"`
	Truncated    bool   `json:"truncated"`
}

// Probe is the body of a probe request.
type Probe struct {
	Kind *string `json:"kind"`
	Path *string `json:"path"`
	Port *int64  `json:"port"`
	URL  *string `json:"url"`
}

// ProbeOK is the reply to probe.
type ProbeOK struct {
	Type   string `json:"type"`
	ID     uint64 `json:"id"`
	Ready  bool   `json:"ready"`
	Detail string `json:"detail"`
}

// TCPRequest is the body of tcp_open (Port) and of tcp_send, tcp_shutdown
// and tcp_close (Target, the id of the tcp_open).
type TCPRequest struct {
	Port   *int64  `json:"port"`
	Target *uint64 `json:"target"`
}

// TCPClosed is the last frame of a forwarded connection.
type TCPClosed struct {
	Type  string `json:"type"`
	ID    uint64 `json:"id"`
	Error string `json:"error,omitempty"`
}
