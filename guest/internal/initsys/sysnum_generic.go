//go:build arm64 || riscv64 || loong64

package initsys

// sysFinitModule is finit_module(2) in the generic syscall table.
const sysFinitModule = 273
