package gateway

import (
	"errors"
	"fmt"

	"github.com/lesismal/nbio"

	"github.com/herald-push/herald/protocol"
)

// startTCP starts the raw TCP listener: length-prefixed binary frames on an
// nbio event loop.
func (g *Gateway) startTCP() error {
	if g.cfg.TCPTLS.Enabled() {
		return errors.New("gateway: TLS on the raw TCP listener is not supported yet; terminate TLS in front of it")
	}
	e := nbio.NewEngine(nbio.Config{
		Network:            "tcp",
		Addrs:              []string{g.cfg.TCPAddr},
		NPoller:            g.cfg.Pollers,
		MaxWriteBufferSize: g.cfg.OutboundLimit,
		Listen:             listenHook(&g.tcpAddr),
	})
	e.OnOpen(func(nc *nbio.Conn) {
		if g.draining.Load() {
			_ = nc.Close()
			return
		}
		c := g.opened(TCP, nc.RemoteAddr(), func(c *Conn) { c.nc = nc })
		nc.SetSession(c)
	})
	e.OnData(g.onTCPData)
	e.OnClose(func(nc *nbio.Conn, err error) {
		if c, ok := nc.Session().(*Conn); ok {
			g.closedConn(c, err)
		}
	})
	if err := e.Start(); err != nil {
		return fmt.Errorf("tcp listener %s: %w", g.cfg.TCPAddr, err)
	}
	g.tcp = e
	return nil
}

// onTCPData runs on the event loop with whatever bytes arrived. Complete
// frames are decoded in place; the tail of an incomplete frame is kept in
// c.partial until the rest arrives. The event loop reuses data, so nothing
// may keep a reference to it.
func (g *Gateway) onTCPData(nc *nbio.Conn, data []byte) {
	c, ok := nc.Session().(*Conn)
	if !ok || c.Closed() {
		return
	}
	buf := data
	if len(c.partial) > 0 {
		c.partial = append(c.partial, data...)
		buf = c.partial
	}
	for len(buf) > 0 && !c.Closed() {
		body, n, err := protocol.NextFramed(buf, g.cfg.Limits)
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
	c.partial = rest
}
