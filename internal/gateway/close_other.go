//go:build !(linux || darwin || netbsd || freebsd || openbsd || dragonfly)

package gateway

import "github.com/lesismal/nbio"

// closeSocket closes nc. Where nbio runs on the standard library's
// network poller (Windows) there is no descriptor table to go stale.
func closeSocket(nc *nbio.Conn) { _ = nc.Close() }
