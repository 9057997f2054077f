package gateway

import (
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/mempool"
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
	// The frame guard (wsReader) refuses larger messages with a protocol
	// error before nbio buffers them; this is a backstop.
	up.MessageLengthLimit = maxWSMessage(g.cfg.Limits)
	up.OnMessage(g.onWSMessage)
	up.OnClose(func(wc *websocket.Conn, err error) {
		if c, ok := wc.Session().(*Conn); ok {
			g.closedConn(c, err)
		}
	})

	setup := &wsSetup{}
	mux := http.NewServeMux()
	mux.HandleFunc(g.cfg.WSPath, func(w http.ResponseWriter, r *http.Request) {
		if g.draining.Load() {
			http.Error(w, "server is draining", http.StatusServiceUnavailable)
			return
		}
		if !g.originAllowed(w, r) {
			return
		}
		if !g.admitHTTP(w, r) {
			return
		}
		setup.upgrading(r.RemoteAddr)
		reguard := unguardParser(w) // the upgrade finds the parser in the session
		wc, err := up.Upgrade(w, r, nil)
		if err != nil {
			reguard() // still HTTP: guarded again for the rest of this request
			return    // Upgrade has answered the request
		}
		c := g.opened(WebSocket, func(c *Conn) { c.ws = wc })
		wc.SetSession(c)
		if err := guardWS(c, wc); err != nil {
			g.log.Error("websocket upgrade", "err", err)
			c.Close(protocol.NewDisconnect(protocol.DisconnectServerError))
		}
	})

	sse := ssePath(g.cfg.WSPath)
	mux.HandleFunc(sse, func(w http.ResponseWriter, r *http.Request) { g.serveSSE(w, r, setup) })
	mux.HandleFunc(sse+"/", g.serveSSEPost)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSONError(w, http.StatusNotFound, "not_found", "no such endpoint: WebSocket is at "+g.cfg.WSPath+", SSE at "+sse)
	})

	conf := nbhttp.Config{
		Network: "tcp",
		Handler: mux,
		Listen: func(network, addr string) (net.Listener, error) {
			ln, err := listenHook(&g.wsAddr)(network, addr)
			if err != nil {
				return nil, err
			}
			return &wsListener{Listener: ln, setup: setup}, nil
		},
		NPoller: g.cfg.Pollers,
		// What nbhttp may buffer of one connection: the rest of an HTTP
		// request before the upgrade, a partial WebSocket frame after it.
		// The default is 64 MiB; a message the guard lets through and
		// one read more is enough.
		ReadLimit:          maxWSMessage(g.cfg.Limits) + wsMaxHeader + nbio.DefaultReadBufferSize,
		MaxWriteBufferSize: g.cfg.OutboundLimit,
		// A POST to an SSE session carries at most a frame; nbhttp reads
		// a body whole before the handler runs, and closes a connection
		// whose body is over this.
		MaxHTTPBodySize: maxWSMessage(g.cfg.Limits),
		// Request bodies (SSE POSTs, a frame each) come from the Go heap,
		// not nbio's shared pool: under TLS a pooled body buffer was seen
		// (by the race detector) handed out while a TLS connection still
		// read from it. Bodies are small and short-lived; the GC frees them.
		BodyAllocator: mempool.NewSTD(),
		// TLS record buffers too: nbio's default is the process-wide
		// pool, which the upgrader's answer also came from (see
		// up.Engine below); the race detector saw one written while a
		// TLS connection still read from it.
		TLSAllocator:            g.tlsBuffers,
		ReleaseWebsocketPayload: true,
		KeepaliveTime:           g.cfg.AuthTimeout, // only until the upgrade
		// Handle messages on the event loop, as the TCP listener does,
		// not on a goroutine pool: handlers must not block anyway, and a
		// connection closed while handling a message (nbhttp closes it
		// itself when it gets the peer's close frame) is then closed on
		// the poller goroutine. Closed on another goroutine, it can be
		// closed while the poller holds a stale event for its descriptor,
		// which a new connection may have been given meanwhile: see
		// closeSocket. HTTP handlers run there too, inside the parser's
		// lock: see parserGuard for what that asks of a close.
		ServerExecutor: func(f func()) { f() },
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
	// Every read goes to the connection's own handler, as nbhttp does,
	// once its HTTP parser has a guard (see parserGuard).
	g.ws.Engine.OnData(func(c *nbio.Conn, data []byte) {
		guardParser(c)
		c.DataHandler()(c, data)
	})
	// The upgrader writes its 101 answer, and the WebSocket connections
	// take their message buffers, through its engine's allocator: this
	// engine's (the Go heap), not nbio's process-wide default engine and
	// pool that NewUpgrader starts with.
	up.Engine = g.ws
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
		setup.accepted(c)
	})
	if err := g.ws.Start(); err != nil {
		return fmt.Errorf("websocket listener %s: %w", g.cfg.WSAddr, err)
	}
	// nbhttp's accept loops never clear their stop flag; its event loops
	// are nbio's and do (see waitPollers). The probes reach nbhttp's data
	// handler, which calls the connection's own.
	if err := awaitStarted(g.ws.Engine, nil, g.ws.Stop); err != nil {
		g.ws = nil
		return fmt.Errorf("websocket listener %s: %w", g.cfg.WSAddr, err)
	}
	return nil
}

// maxWSMessage is the largest WebSocket message a client may send once
// connected: several binary frames back to back.
func maxWSMessage(lim protocol.Limits) int { return 4 * lim.MaxFrame }

// wsMaxHeader is the longest WebSocket frame header.
const wsMaxHeader = 14

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

// wsSetup makes sure no read deadline is left on an upgraded connection.
//
// nbhttp closes a connection that sends no request within KeepaliveTime
// (here the auth timeout) by a read deadline, which the upgrade clears.
// But the accepting goroutine arms that deadline after it has handed the
// socket to the poller, and when it is slow to get there (descheduled
// under load) the poller may already have parsed the upgrade request and
// cleared the deadline: the late deadline then closes an authenticated,
// busy WebSocket connection one auth timeout after it was accepted.
//
// The accepting goroutine calls the listener's Accept again only once it
// has set up the previous connection, deadline included. So: OnOpen
// records the connection being set up, the upgrade handler marks it
// before upgrading, and the next Accept clears the deadline of a marked
// connection. If Accept sees the mark, its clear comes after the deadline;
// if not, the mark, and so the upgrade's own clear, came after Accept,
// which is after the deadline. Connections whose request comes later are
// not marked (the deadline is long set) and need nothing.
type wsSetup struct {
	mu       sync.Mutex
	last     net.Conn // accepted, and perhaps without its deadline yet
	lastAddr string   // its remote address, as in http.Request.RemoteAddr
	marked   bool     // the upgrade handler has begun upgrading last
}

// accepted runs on the accepting goroutine before c is handed to a poller.
func (s *wsSetup) accepted(c net.Conn) {
	addr := remoteString(c.RemoteAddr())
	s.mu.Lock()
	s.last, s.lastAddr, s.marked = c, addr, false
	s.mu.Unlock()
}

// upgrading runs in the upgrade handler, before the upgrade.
func (s *wsSetup) upgrading(remote string) {
	s.mu.Lock()
	if s.last != nil && s.lastAddr == remote {
		s.marked = true
	}
	s.mu.Unlock()
}

// setUp runs on the accepting goroutine when the last connection is set up.
func (s *wsSetup) setUp() {
	s.mu.Lock()
	c := s.last
	if !s.marked {
		c = nil
	}
	s.last, s.lastAddr, s.marked = nil, "", false
	s.mu.Unlock()
	if c != nil {
		_ = c.SetReadDeadline(time.Time{})
	}
}

// wsListener tells wsSetup when nbhttp has set up a connection: nbhttp's
// accepting goroutine calls Accept again only then.
type wsListener struct {
	net.Listener
	setup *wsSetup
}

func (l *wsListener) Accept() (net.Conn, error) {
	l.setup.setUp()
	return l.Listener.Accept()
}
