//go:build !amd64 && !arm64 && !riscv64 && !loong64

package initsys

// sysFinitModule is unknown on this architecture; loading fails with ENOSYS.
// (A variable, because a negative constant cannot be converted to uintptr.)
var sysFinitModule = -1
