//go:build !linux

package bench

import "syscall"

// childAttr is nil where the kernel cannot kill children with their
// parent: an interrupted bench stops its children itself (Stop), and a
// killed one leaves them to the operator.
func childAttr() *syscall.SysProcAttr { return nil }
