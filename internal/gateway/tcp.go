package gateway

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"

	"github.com/herald-push/herald/protocol"
)

// startTCP starts the raw TCP listener: length-prefixed binary frames on an
// nbio event loop, optionally inside TLS (decrypted on the loop too).
func (g *Gateway) startTCP() error {
	var tlsConf *tls.Config
	if g.cfg.TCPTLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(g.cfg.TCPTLS.CertFile, g.cfg.TCPTLS.KeyFile)
		if err != nil {
			return fmt.Errorf("tcp tls: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	accepting := make(chan struct{})
	e := nbio.NewEngine(nbio.Config{
		Network:            "tcp",
		Addrs:              []string{g.cfg.TCPAddr},
		NPoller:            g.cfg.Pollers,
		MaxWriteBufferSize: g.cfg.OutboundLimit,
		Listen: func(network, addr string) (net.Listener, error) {
			ln, err := listenHook(&g.tcpAddr)(network, addr)
			if err != nil {
				return nil, err
			}
			return &acceptingListener{Listener: ln, accepting: accepting}, nil
		},
	})
	e.OnOpen(func(nc *nbio.Conn) {
		if isProbe(nc) {
			return
		}
		if g.draining.Load() {
			_ = nc.Close()
			return
		}
		if r := g.admit(addrOf(nc.RemoteAddr()), g.cfg.Now().UnixMilli()); r != nil {
			_ = nc.Close() // no state, no session: OnClose finds nothing
			return
		}
		c := g.opened(TCP, func(c *Conn) {
			c.nc = nc
			if tlsConf != nil {
				// Record buffers from the Go heap, not nbio's shared
				// pool (see the WebSocket listener's TLSAllocator).
				c.tc = tls.NewConn(nc, tlsConf, false, true, g.tlsBuffers)
			}
		})
		nc.SetSession(c)
	})
	e.OnData(func(nc *nbio.Conn, data []byte) {
		if isProbe(nc) {
			if h := nc.DataHandler(); h != nil {
				h(nc, data)
			}
			return
		}
		c, ok := nc.Session().(*Conn)
		if !ok || c.Closed() {
			return
		}
		if c.tc == nil {
			g.onTCPData(c, data)
			return
		}
		g.onTLSData(c, data)
	})
	e.OnClose(func(nc *nbio.Conn, err error) {
		if c, ok := nc.Session().(*Conn); ok {
			g.closedConn(c, err)
		}
	})
	if err := e.Start(); err != nil {
		return fmt.Errorf("tcp listener %s: %w", g.cfg.TCPAddr, err)
	}
	// nbio's accept loop (acceptorLoop in poller_epoll.go) clears its stop
	// flag when its goroutine starts, as the event loops do (see
	// waitPollers): stopped before that, it spins on the closed listener
	// for ever. Its first Accept call shows it has started.
	if err := awaitStarted(e, accepting, e.Stop); err != nil {
		return fmt.Errorf("tcp listener %s: %w", g.cfg.TCPAddr, err)
	}
	g.tcp = e
	return nil
}

// acceptingListener closes accepting when Accept is first called.
type acceptingListener struct {
	net.Listener
	once      sync.Once
	accepting chan struct{}
}

func (l *acceptingListener) Accept() (net.Conn, error) {
	l.once.Do(func() { close(l.accepting) })
	return l.Listener.Accept()
}

// pollerWait bounds how long Start waits for the event loop goroutines.
const pollerWait = 10 * time.Second

// awaitStarted returns once e's accept loop (if accepting is not nil) and
// every event loop run. If they do not, stop is called in the background:
// it may then never return (see waitPollers), and its goroutine with it.
func awaitStarted(e *nbio.Engine, accepting <-chan struct{}, stop func()) error {
	err := waitPollers(e)
	if err == nil && accepting != nil {
		select {
		case <-accepting:
		case <-time.After(pollerWait):
			err = fmt.Errorf("accept loop not running after %v", pollerWait)
		}
	}
	if err != nil {
		go stop()
	}
	return err
}

// onTCPData runs on the event loop with whatever bytes arrived. Complete
// frames are decoded in place; the tail of an incomplete frame is kept in
// c.partial until the rest arrives. The event loop reuses data, so nothing
// may keep a reference to it.
func (g *Gateway) onTCPData(c *Conn, data []byte) {
	buf := data
	if c.partial != nil {
		*c.partial = append(*c.partial, data...)
		buf = *c.partial
	}
	for len(buf) > 0 && !c.Closed() {
		lim := g.cfg.Limits
		if c.state.Load() == stateOpen {
			lim.MaxFrame = lim.MaxConnect // nothing larger is buffered before CONNECT
		}
		body, n, err := protocol.NextFramed(buf, lim)
		if err != nil {
			c.partial = nil
			g.decodeError(c, err)
			return
		}
		if n == 0 {
			break
		}
		f := new(protocol.Frame)
		if err := protocol.DecodeBinary(body, f, g.cfg.Limits); err != nil {
			c.partial = nil
			g.decodeError(c, err)
			return
		}
		g.frame(c, f)
		buf = buf[n:]
	}
	if len(buf) == 0 || c.Closed() {
		c.partial = nil
		return
	}
	rest := make([]byte, len(buf), max(len(buf), 512))
	copy(rest, buf)
	c.partial = &rest
}

// onTLSData decrypts what arrived, in place in the event loop's buffer, and
// parses the plaintext.
func (g *Gateway) onTLSData(c *Conn, data []byte) {
	defer c.tc.ResetOrFreeBuffer()
	in, buf := data, data
	for !c.Closed() {
		_, n, err := c.tc.AppendAndRead(in, buf)
		in = nil
		if err != nil {
			_ = c.nc.CloseWithError(err)
			return
		}
		if n == 0 {
			return
		}
		g.onTCPData(c, buf[:n])
	}
}
