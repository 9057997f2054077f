package bench

import "syscall"

// childAttr makes a worker or a spawned server die with the bench
// (SIGKILL when the bench's thread exits), so an interrupted run leaves
// no processes behind.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
