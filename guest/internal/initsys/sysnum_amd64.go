package initsys

// sysFinitModule is finit_module(2); the syscall package only defines it
// for the "generic" syscall table architectures.
const sysFinitModule = 313
