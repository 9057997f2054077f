//go:build linux || darwin || netbsd || freebsd || openbsd || dragonfly

package gateway

import (
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
)


// waitPollers returns once each of e's I/O event loop goroutines is
// running its loop.
//
// nbio's poller loop (readWriteLoop in poller_epoll.go, v1.6.9) sets its
// stop flag to false when its goroutine starts, and Engine.Stop sets it to
// true and wakes the loop once. A Stop that runs before a loop goroutine
// has started is undone by it: the loop then spins for ever on the unread
// wake-up event and Stop waits for it for ever. Engine.Start only spawns
// the goroutines, so a gateway stopped right after it starts could hang.
//
// Proof that a loop runs is an event it handled, after it cleared the flag.
// A connection goes to the loop its descriptor selects (Conn.Hash modulo
// the loops), so a socket of a pair is added to e on a descriptor chosen
// for each loop, a byte is written to each pair, and each loop's read of
// it is awaited. Closing the peers then gives every probe an end of file that
// its own loop closes it on. Timing-free, unlike a dial: which loop an
// accepted connection lands on is not ours to choose.
func waitPollers(e *nbio.Engine) error {
	n := e.NPoller
	ran := make(chan int, n)
	var peers []int
	defer func() {
		for _, fd := range peers {
			_ = syscall.Close(fd)
		}
	}()
	covered := make([]bool, n)
	for left, tries := n, 0; left > 0; tries++ {
		if tries == 4*n+16 { // only if other goroutines keep taking the chosen descriptors
			return fmt.Errorf("event loops: no socket found for each of %d loops", n)
		}
		fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
		if err != nil {
			return fmt.Errorf("event loops: socket pair: %w", err)
		}
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
		peers = append(peers, fds[1])
		f := os.NewFile(uintptr(fds[0]), "event loop probe")
		sc, err := net.FileConn(f) // a duplicate of fds[0]
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("event loops: probe: %w", err)
		}
		// AddConn duplicates sc onto the lowest free descriptor. Hold
		// descriptors (duplicates of the peer, closed at the end) until
		// the lowest free one selects a loop without a probe yet.
		for {
			x, err := syscall.Dup(fds[1])
			if err != nil {
				_ = sc.Close()
				return fmt.Errorf("event loops: probe: %w", err)
			}
			if !covered[x%n] {
				_ = syscall.Close(x)
				break
			}
			peers = append(peers, x)
		}
		c, err := e.AddConn(sc) // closes sc
		if err != nil {
			return fmt.Errorf("event loops: probe: %w", err)
		}
		i := c.Hash() % n
		// Set under the lock the loop reads under (see startWS's OnOpen).
		c.Lock()
		c.OnData(func(*nbio.Conn, []byte) {
			select {
			case ran <- i:
			default:
			}
		})
		c.Unlock()
		if covered[i] {
			continue // another goroutine took the descriptor first: again
		}
		covered[i] = true
		left--
		if _, err := syscall.Write(fds[1], []byte{0}); err != nil {
			return fmt.Errorf("event loops: probe: %w", err)
		}
	}
	t := time.NewTimer(pollerWait)
	defer t.Stop()
	running := make([]bool, n)
	for seen := 0; seen < n; {
		select {
		case i := <-ran:
			if !running[i] {
				running[i] = true
				seen++
			}
		case <-t.C:
			return fmt.Errorf("event loops: %d of %d not running after %v", n-seen, n, pollerWait)
		}
	}
	return nil
}

// isProbe reports whether nc is one of waitPollers' sockets: the gateway
// listens on TCP only, so a Unix socket is never a client.
func isProbe(nc *nbio.Conn) bool { return nc.IsUnix() }
