package gateway

import (
	"fmt"
	"net"
	"net/http"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp"
	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/herald-push/herald/protocol"
)

// startWS starts the WebSocket listener: an nbhttp engine that parses the
// HTTP upgrade and then WebSocket frames on its event loop.
func (g *Gateway) startWS() error {
	up := websocket.NewUpgrader()
	up.KeepaliveTime = 0 // deadlines are the wheel's job; no timer per connection
	up.CheckOrigin = func(*http.Request) bool { return true }
	// Let messages somewhat over the frame limit through, so the client gets
	// a protocol error saying why; far over it, nbio drops the connection.
	up.MessageLengthLimit = 4 * g.cfg.Limits.MaxFrame
	up.OnMessage(g.onWSMessage)
	up.OnClose(func(wc *websocket.Conn, err error) {
		if c, ok := wc.Session().(*Conn); ok {
			g.closedConn(c, err)
		}
	})

	mux := http.NewServeMux()
	mux.HandleFunc(g.cfg.WSPath, func(w http.ResponseWriter, r *http.Request) {
		if g.draining.Load() {
			http.Error(w, "server is draining", http.StatusServiceUnavailable)
			return
		}
		wc, err := up.Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade has answered the request
		}
		c := g.opened(WebSocket, wc.RemoteAddr(), func(c *Conn) { c.ws = wc })
		wc.SetSession(c)
	})

	conf := nbhttp.Config{
		Network:                 "tcp",
		Handler:                 mux,
		Listen:                  listenHook(&g.wsAddr),
		NPoller:                 g.cfg.Pollers,
		MaxWriteBufferSize:      g.cfg.OutboundLimit,
		ReleaseWebsocketPayload: true,
		KeepaliveTime:           g.cfg.AuthTimeout, // only until the upgrade
	}
	if g.cfg.WSTLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(g.cfg.WSTLS.CertFile, g.cfg.WSTLS.KeyFile)
		if err != nil {
			return fmt.Errorf("websocket tls: %w", err)
		}
		conf.AddrsTLS = []string{g.cfg.WSAddr}
		conf.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	} else {
		conf.Addrs = []string{g.cfg.WSAddr}
	}
	g.ws = nbhttp.NewEngine(conf)
	// nbhttp accepts on a goroutine of its own, builds the connection's
	// state there and hands the socket to a poller goroutine through epoll,
	// which orders the two for the CPU but not for the Go memory model: the
	// poller then reads that state (the remote address, while it parses the
	// upgrade request) in code the race detector watches, and -race reports
	// a data race on some connections. OnOpen runs on the accepting
	// goroutine after that state is built and before the socket is
	// registered; taking the connection's lock here pairs with the lock the
	// poller takes around every read, which makes the hand-over a
	// happens-before edge. One uncontended lock per accepted connection.
	g.ws.OnOpen(func(c net.Conn) {
		if nc, ok := c.(*nbio.Conn); ok {
			nc.Lock()
			nc.Unlock()
		}
	})
	if err := g.ws.Start(); err != nil {
		return fmt.Errorf("websocket listener %s: %w", g.cfg.WSAddr, err)
	}
	return nil
}

// onWSMessage decodes one WebSocket message: text carries JSON frames,
// binary carries length-prefixed binary frames.
func (g *Gateway) onWSMessage(wc *websocket.Conn, mt websocket.MessageType, data []byte) {
	c, ok := wc.Session().(*Conn)
	if !ok || c.Closed() {
		return
	}
	lim := g.cfg.Limits
	if mt == websocket.TextMessage {
		if c.state.Load() == stateOpen {
			c.encoding.Store(uint32(JSON))
		}
		frames, err := protocol.DecodeJSONBatch(data, lim)
		if err != nil {
			g.decodeError(c, err)
			return
		}
		for i := range frames {
			if c.Closed() {
				return
			}
			g.frame(c, &frames[i])
		}
		return
	}
	if c.state.Load() == stateOpen {
		c.encoding.Store(uint32(Binary))
	}
	for len(data) > 0 && !c.Closed() {
		body, n, err := protocol.NextFramed(data, lim)
		if err == nil && n == 0 {
			err = fmt.Errorf("%w: message ends inside a frame", protocol.ErrMalformed)
		}
		if err != nil {
			g.decodeError(c, err)
			return
		}
		f := new(protocol.Frame)
		if err := protocol.DecodeBinary(body, f, lim); err != nil {
			g.decodeError(c, err)
			return
		}
		g.frame(c, f)
		data = data[n:]
	}
}
