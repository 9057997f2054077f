//go:build linux || darwin || netbsd || freebsd || openbsd || dragonfly

package gateway

import (
	"syscall"
	"time"

	"github.com/lesismal/nbio"
)

// closeSocket ends a connection from any goroutine without closing its
// descriptor there.
//
// nbio's poller looks connections up by descriptor number. If a descriptor
// is closed while the poller holds an event for it from epoll_wait (the
// peer's close frame and FIN, say) - closed by another goroutine, or by
// the poller itself while it handles another connection's event - the
// listener can accept a new connection that gets the same number before
// the poller handles that stale event, and the poller then closes the new
// connection: a client that has just connected is dropped before it gets
// an answer.
//
// So the socket is only shut down here: the descriptor stays allocated,
// the peer gets everything written so far and then FIN, and the shutdown
// wakes the poller, which sees the hang-up and closes the connection
// itself, on its own goroutine, with the usual close callbacks. The
// connection's lock is held across the check and the shutdown so that a
// descriptor closed (and perhaps reused) meanwhile is never touched.
//
// A socket the peer reset is no longer connected: shutdown fails
// (ENOTCONN), and the poller, which reports such a socket at once, closes
// it on its own goroutine. It is closed here too, as a last resort, only
// after closeLater: long after any event the poller held for it, so that
// the number is not free for a new connection while such an event waits.
func closeSocket(nc *nbio.Conn) {
	nc.Lock()
	closed, _ := nc.IsClosed()
	var err error = syscall.EINVAL
	if !closed {
		if rc, rerr := nc.SyscallConn(); rerr == nil {
			_ = rc.Control(func(fd uintptr) { err = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
		}
	}
	nc.Unlock()
	if !closed && err != nil {
		time.AfterFunc(closeLater, func() { _ = nc.Close() }) // a no-op once the poller closed it
	}
}

// closeLater is how long closeSocket leaves a socket that is no longer
// connected to the poller before closing it itself.
const closeLater = time.Second
