// Package gateway accepts client connections over WebSocket and raw TCP,
// decodes their frames, keeps heartbeats and writes frames to sockets.
//
// It runs on an event loop (nbio): a connection that has nothing to say
// costs its state and no goroutine or read buffer. Deadlines (auth timeout,
// idle timeout) are kept by one timing wheel, not one timer per connection.
// Everything the gateway does not own (who a client is, what it
// subscribes to) it hands to a Handler; it imports no hub, store or broker.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/mempool"
	"github.com/lesismal/nbio/nbhttp"

	"github.com/herald-push/herald/internal/appstats"
	"github.com/herald-push/herald/internal/origin"
	"github.com/herald-push/herald/protocol"
)

// Handler receives what clients send. Calls for one connection are
// serialised; calls for different connections run concurrently. Handlers
// must not block: they run on the event loop's workers.
type Handler interface {
	// OnFrame is called for every decoded frame except PING and PONG, which
	// the gateway answers itself. Until the handler calls
	// Conn.Authenticate, only CONNECT frames reach it.
	OnFrame(c *Conn, f *protocol.Frame)
	// OnClose is called once, after the connection is closed, with the reason.
	OnClose(c *Conn, reason protocol.Disconnect)
}

// Config configures a Gateway. Zero durations and sizes take the defaults
// noted on each field.
type Config struct {
	WSAddr string // WebSocket listen address; empty disables
	WSPath string // HTTP path of the WebSocket endpoint; default "/ws". The SSE transport is served beside it: /ws -> /sse
	WSTLS  TLS    // certificate files; TLS is on when both are set
	// AllowedOrigins are the browser origins allowed on the WebSocket (and
	// SSE) endpoints; the zero List allows any. A request from another
	// origin gets 403 origin_not_allowed before it is upgraded.
	AllowedOrigins origin.List

	TCPAddr string // raw TCP listen address; empty disables
	TCPTLS  TLS    // certificate files; TLS is on when both are set

	Limits        protocol.Limits // decoder limits; default protocol.DefaultLimits(); MaxConnect bounds frames and WebSocket messages before CONNECT is accepted
	OutboundLimit int             // bytes queued per connection before it is a slow consumer; default 1 MiB

	// FrameRate bounds the frames one connection may send: every decoded
	// frame (each frame of a batch) and WebSocket control frames; default
	// DefaultFrameRate. Over it the client gets ERROR rate limited and
	// DISCONNECT policy violation.
	FrameRate Rate
	// SubscribeRate bounds the SUBSCRIBE and UNSUBSCRIBE requests of one
	// connection, likewise; default DefaultSubscribeRate.
	SubscribeRate Rate

	// Protection bounds who may connect and how many, at accept; the
	// zero value refuses nothing.
	Protection Protection

	Heartbeat   time.Duration // interval announced to clients; default 180 s
	Grace       time.Duration // silence allowed past Heartbeat before closing; default 30 s
	AuthTimeout time.Duration // time allowed for a valid CONNECT; default 10 s

	// Latency, if set, observes the delivery latency of every stamped
	// frame written (see package appstats).
	Latency *appstats.Recorder

	Pollers int          // event loop goroutines per listener kind; default 1
	Logger  *slog.Logger // default slog.Default()
	Now     func() time.Time
}

// Default rates: far above what a healthy client sends (a PING per
// heartbeat, an ACK per batch of pushes, its subscriptions again after a
// reconnect), far below what a flood does.
var (
	DefaultFrameRate     = Rate{PerSecond: 1000, Burst: 4000}
	DefaultSubscribeRate = Rate{PerSecond: 10, Burst: 256}
)

func (c *Config) setDefaults() {
	if c.WSPath == "" {
		c.WSPath = "/ws"
	}
	if c.Limits == (protocol.Limits{}) {
		c.Limits = protocol.DefaultLimits()
	}
	if c.Limits.MaxConnect <= 0 {
		c.Limits.MaxConnect = protocol.DefaultMaxConnect
	}
	if c.FrameRate == (Rate{}) {
		c.FrameRate = DefaultFrameRate
	}
	if c.SubscribeRate == (Rate{}) {
		c.SubscribeRate = DefaultSubscribeRate
	}
	if c.OutboundLimit <= 0 {
		c.OutboundLimit = 1 << 20
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 180 * time.Second
	}
	if c.Grace <= 0 {
		c.Grace = 30 * time.Second
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.Pollers <= 0 {
		c.Pollers = 1
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// TLS names a certificate and key in PEM files.
type TLS struct {
	CertFile, KeyFile string
}

// Enabled reports whether both files are set.
func (t TLS) Enabled() bool { return t.CertFile != "" && t.KeyFile != "" }

// Gateway owns the listeners and every client connection.
type Gateway struct {
	cfg     Config
	handler Handler
	log     *slog.Logger

	ws  *nbhttp.Engine
	tcp *nbio.Engine

	wsAddr, tcpAddr net.Addr

	nextID    atomic.Uint64
	wheel     *wheel
	stats     counters
	admission *admitState
	// tlsBuffers allocates TLS record buffers from the Go heap: nbio's
	// shared pool was seen (by the race detector) handing out a buffer a
	// TLS connection still read from.
	tlsBuffers mempool.Allocator

	// What the WebSocket frame guard allows before and after CONNECT.
	wsPreAuth, wsLimits wsLimits

	// Open SSE connections by session token.
	sseMu sync.Mutex
	sse   map[string]*sseConn

	// rates are the frame and subscribe rates, replaced whole by SetRates
	// (one atomic load per frame).
	rates atomic.Pointer[rates]

	draining atomic.Bool
	stop     chan struct{}
	done     chan struct{}
}

// New returns a gateway that hands client frames to h. Call Start to listen.
func New(cfg Config, h Handler) (*Gateway, error) {
	cfg.setDefaults()
	if cfg.WSAddr == "" && cfg.TCPAddr == "" {
		return nil, errors.New("gateway: no listener configured")
	}
	// One write is at most a frame or a merged batch; the limit must hold it.
	if cfg.OutboundLimit < cfg.Limits.MaxFrame || cfg.OutboundLimit < maxBatch {
		return nil, fmt.Errorf("gateway: outbound limit %d must be at least the frame limit %d and %d", cfg.OutboundLimit, cfg.Limits.MaxFrame, maxBatch)
	}
	if ssePath(cfg.WSPath) == path.Clean(cfg.WSPath) {
		return nil, fmt.Errorf("gateway: websocket path %q is where the SSE transport is served", cfg.WSPath)
	}
	if cfg.Limits.MaxConnect > cfg.Limits.MaxFrame {
		return nil, fmt.Errorf("gateway: connect limit %d is over the frame limit %d", cfg.Limits.MaxConnect, cfg.Limits.MaxFrame)
	}
	if cr := cfg.Protection.ConnRate; cr != (Rate{}) && (cr.PerSecond <= 0 || cr.Burst < 0 || cr.Burst > MaxBurst) {
		return nil, fmt.Errorf("gateway: connection rate %+v must be positive, with a burst of at most %d", cr, MaxBurst)
	}
	if p := cfg.Protection; p.FlapConnects > 0 && (p.FlapWindow <= 0 || p.FlapBan <= 0) {
		return nil, fmt.Errorf("gateway: flap detection needs a positive window and ban, not %v and %v", p.FlapWindow, p.FlapBan)
	}
	if !cfg.FrameRate.valid() || !cfg.SubscribeRate.valid() {
		return nil, fmt.Errorf("gateway: rates %+v and %+v must be positive, with bursts of at most %d", cfg.FrameRate, cfg.SubscribeRate, MaxBurst)
	}
	g := &Gateway{
		cfg:        cfg,
		handler:    h,
		log:        cfg.Logger,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		sse:        make(map[string]*sseConn),
		admission:  newAdmitState(cfg.Protection),
		tlsBuffers: mempool.NewSTD(),
		wsPreAuth: wsLimits{text: uint32(cfg.Limits.MaxConnect), binary: uint32(cfg.Limits.MaxConnect),
			stopAtMessageEnd: true},
		// A text message over MaxFrame is read whole and refused by the
		// JSON decoder, as a binary message with a frame over it is.
		wsLimits: wsLimits{text: uint32(maxWSMessage(cfg.Limits)), binary: uint32(maxWSMessage(cfg.Limits))},
	}
	g.rates.Store(&rates{frame: cfg.FrameRate, subscribe: cfg.SubscribeRate})
	g.wheel = newWheel(g.tick(), max(cfg.AuthTimeout, cfg.Heartbeat+cfg.Grace), cfg.Now())
	return g, nil
}

// tick is the wheel's resolution: fine enough that a deadline is met within
// an eighth of the shortest timeout, coarse enough to cost nothing.
func (g *Gateway) tick() time.Duration {
	t := min(g.cfg.AuthTimeout, g.cfg.Heartbeat+g.cfg.Grace) / 8
	return min(max(t, 10*time.Millisecond), time.Second)
}

// Start opens the listeners and starts the event loops and the wheel.
func (g *Gateway) Start() error {
	if g.cfg.WSAddr != "" {
		if err := g.startWS(); err != nil {
			return err
		}
	}
	if g.cfg.TCPAddr != "" {
		if err := g.startTCP(); err != nil {
			if g.ws != nil {
				g.ws.Stop()
			}
			return err
		}
	}
	go g.runWheel()
	return nil
}

// WSAddr returns the bound WebSocket address, or nil.
func (g *Gateway) WSAddr() net.Addr { return g.wsAddr }

// TCPAddr returns the bound TCP address, or nil.
func (g *Gateway) TCPAddr() net.Addr { return g.tcpAddr }

// Heartbeat returns the heartbeat interval announced to clients.
func (g *Gateway) Heartbeat() time.Duration { return g.cfg.Heartbeat }

// Draining reports whether Shutdown has begun.
func (g *Gateway) Draining() bool { return g.draining.Load() }

// Shutdown tells every client to reconnect (to alt, if given), closes the
// connections and listeners and stops the event loops. It returns when all
// are closed or ctx is done.
func (g *Gateway) Shutdown(ctx context.Context, alt string) error {
	if !g.draining.CompareAndSwap(false, true) {
		return nil
	}
	d := protocol.NewDisconnect(protocol.DisconnectShutdown)
	d.Alt = alt
	var conns []*Conn
	g.wheel.each(func(c *Conn) { conns = append(conns, c) })
	for _, c := range conns {
		c.Close(d)
	}
	// Wait until the event loops report every connection closed.
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	var err error
wait:
	for g.wheel.len() > 0 {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("gateway shutdown: %d connections left: %w", g.wheel.len(), ctx.Err())
			break wait
		case <-t.C:
		}
	}
	close(g.stop)
	<-g.done
	if g.ws != nil {
		g.ws.Stop()
	}
	if g.tcp != nil {
		g.tcp.Stop()
	}
	return err
}

func (g *Gateway) runWheel() {
	defer close(g.done)
	t := time.NewTicker(g.wheel.tick)
	defer t.Stop()
	idle := g.cfg.Heartbeat + g.cfg.Grace
	due := func(c *Conn, now time.Time) time.Time {
		if c.Closed() {
			return time.Time{}
		}
		d := c.deadline(g.cfg.AuthTimeout, idle)
		if !now.Before(d) {
			return time.Time{}
		}
		return d
	}
	var expired []*Conn
	var swept time.Time
	for {
		select {
		case <-g.stop:
			return
		case <-t.C:
		}
		g.admission.tick(g.cfg.Now(), &swept)
		expired = g.wheel.advance(g.cfg.Now(), due, expired[:0])
		for _, c := range expired {
			if c.Closed() {
				continue
			}
			code := protocol.DisconnectIdleTimeout
			if !c.Authenticated() {
				code = protocol.DisconnectAuthTimeout
			}
			c.Close(protocol.NewDisconnect(code))
		}
		clear(expired)
	}
}

// opened registers a new connection.
func (g *Gateway) opened(t Transport, attach func(*Conn)) *Conn {
	now := g.cfg.Now()
	c := &Conn{
		id:        g.nextID.Add(1),
		g:         g,
		transport: t,
		opened:    now.UnixNano(),
		slot:      -1,
	}
	attach(c)
	c.lastRead.Store(now.UnixNano())
	r := g.rates.Load()
	c.frames.fill(r.frame, now.UnixMilli())
	c.subs.fill(r.subscribe, now.UnixMilli())
	// Publish c to the event loop. nbio calls the TCP OnOpen on its
	// acceptor goroutine and OnData on a poller goroutine, and hands the
	// connection over through epoll: the kernel orders the two, but the Go
	// memory model (and the race detector) sees no happens-before edge. This
	// atomic store (release) pairs with the state load (acquire) that the
	// TCP OnData callback and onWSMessage do first, through Closed, so every
	// field set above is visible there. Nobody else can see c yet, so storing
	// stateOpen cannot overwrite a later state.
	c.state.Store(stateOpen)
	g.stats.accepted.Add(1)
	g.stats.open.Add(1)
	g.wheel.add(c, now.Add(g.cfg.AuthTimeout))
	return c
}

// closedConn runs once per connection when its socket is gone.
func (g *Gateway) closedConn(c *Conn, err error) {
	g.wheel.remove(c)
	d := c.closed(err)
	g.stats.open.Add(-1)
	g.stats.disconnect(d.Code)
	if c.Session() != nil {
		g.handler.OnClose(c, d)
	}
	if d.Code != protocol.DisconnectNormal && d.Code != protocol.DisconnectShutdown {
		g.log.Debug("connection closed", "conn_id", c.id, "remote", c.RemoteAddr(), "transport", c.transport.String(), "reason", d.Code.String())
	}
}

// frame handles one decoded frame from c.
func (g *Gateway) frame(c *Conn, f *protocol.Frame) {
	now := g.cfg.Now()
	c.lastRead.Store(now.UnixNano())
	g.stats.framesIn.Add(1)
	if !g.allowFrame(c, now.UnixMilli()) {
		g.rateLimited(c, "frames")
		return
	}
	switch f.Type {
	case protocol.TypePing:
		_ = c.SendFrame(&protocol.Frame{Type: protocol.TypePong, Time: f.Time})
		return
	case protocol.TypePong:
		return
	}
	if c.state.Load() == stateOpen && f.Type != protocol.TypeConnect {
		c.Fail(&protocol.Error{Code: protocol.CodeNotAuthenticated, Text: "the first frame must be CONNECT"},
			protocol.NewDisconnect(protocol.DisconnectProtocolError))
		return
	}
	if (f.Type == protocol.TypeSubscribe || f.Type == protocol.TypeUnsubscribe) && !c.subs.take(g.rates.Load().subscribe, now.UnixMilli()) {
		g.rateLimited(c, "subscriptions")
		return
	}
	g.handler.OnFrame(c, f)
}

// decodeError answers a frame that could not be decoded and closes c.
func (g *Gateway) decodeError(c *Conn, err error) {
	g.stats.decodeErrors.Add(1)
	code := protocol.CodeMalformed
	if errors.Is(err, protocol.ErrTooLarge) {
		code = protocol.CodeTooLarge
	}
	g.log.Info("bad frame", "conn_id", c.id, "remote", c.RemoteAddr(), "err", err)
	c.Fail(&protocol.Error{Code: code, Text: err.Error()}, protocol.NewDisconnect(protocol.DisconnectProtocolError))
}

// listenHook wraps net.Listen so the bound address (port 0) is known.
func listenHook(dst *net.Addr) func(network, addr string) (net.Listener, error) {
	return func(network, addr string) (net.Listener, error) {
		ln, err := net.Listen(network, addr)
		if err != nil {
			return nil, err
		}
		*dst = ln.Addr()
		return ln, nil
	}
}
