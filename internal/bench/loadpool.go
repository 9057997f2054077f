package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/lesismal/nbio"

	"github.com/herald-push/herald/protocol"
)

// LoadClientName is what a LoadPool sends as CONNECT.Client.
const LoadClientName = "herald-bench"

// ErrLoadConnClosed is reported (wrapped) to OnClose for a connection that
// was ended by Close, Abort or LoadPool.Stop, and returned by the methods of
// a LoadConn that is already closed. It wraps net.ErrClosed.
var ErrLoadConnClosed = fmt.Errorf("bench: connection closed by the client: %w", net.ErrClosed)

// errLoadPoolStopped is returned by Connect after Stop.
var errLoadPoolStopped = errors.New("bench: load pool stopped")

// LoadPoolConfig configures a LoadPool.
type LoadPoolConfig struct {
	// URL is the server: ws://host:port/path (http:// is a synonym) for
	// binary WebSocket messages, or tcp://host:port for the raw TCP
	// transport. TLS (wss://, tls://) is not supported.
	URL string
	// LocalAddrs are source IP addresses that Connect dials from in turn,
	// e.g. 127.0.0.2 ... 127.0.0.9, so that one worker can open more
	// connections to one server address than one source IP has ports.
	// Empty means any address.
	LocalAddrs []string
	// Limits bound the frames accepted from the server. Zero fields take
	// their value from protocol.DefaultLimits.
	Limits protocol.Limits
	// Pollers is the number of event-loop goroutines; zero means 1.
	Pollers int
	// OnPush is called for every PUSH frame, on an event-loop goroutine,
	// in the order the connection received them, with the time the bytes
	// carrying it were read. It must not block: every connection of the
	// same poller waits for it. f is reused after OnPush returns; its
	// fields (strings, Payload) may be kept. PUSH frames that arrive while
	// Connect is still subscribing (a resume replay, or the messages of a
	// topic subscribed first) are delivered too, before Connect returns:
	// use ConnectValue to have Value set for those.
	OnPush func(c *LoadConn, f *protocol.Frame, received time.Time)
	// OnReply, if set, is called for every REPLY frame, on the event-loop
	// goroutine, in order with the connection's PUSHes (so a REPLY that ends
	// a recovery comes after the replayed PUSHes and before live ones), and
	// before Connect sees it. It must not block; f is reused afterwards. It
	// lets a caller keep a topic's position in the order the server sent
	// it.
	OnReply func(c *LoadConn, f *protocol.Frame)
	// OnClose is called once for every connection that closes after its
	// Connect succeeded, with the DISCONNECT the server sent (d non-nil,
	// err nil) or else the reason the connection ended (d nil): the socket
	// error, a decoding error, or an error wrapping ErrLoadConnClosed when
	// the pool's user ended it. It runs on a goroutine of the engine that
	// runs the close callbacks one after another, so it must not block
	// long either. Open has already been decremented when it runs.
	OnClose func(c *LoadConn, d *protocol.Disconnect, err error)
	// IDBase is the first LoadConn.ID; pools of one process that must not
	// share IDs start at different bases.
	IDBase int
}

// LoadPool holds many client connections on one nbio event loop: an idle
// connection costs a socket and a few hundred bytes, with no goroutine and
// no read buffer of its own (reads use the poller's buffer; only the
// incomplete tail of a frame is copied and kept until the rest arrives).
//
// The pool answers the server's PINGs (and WebSocket pings) but never sends
// PINGs itself: bench runs are shorter than the server's heartbeat. The
// server closes a connection it has heard nothing from (no frame at all:
// ACKs count) for its heartbeat plus grace, 3.5 minutes by default, with
// DisconnectIdleTimeout; a longer run would have to Write PINGs itself.
//
// nbio logs the engine's start and stop through its global logger, which
// writes to os.Stdout unless the program calls nbio/logging.SetLogger or
// SetLevel: a worker that reports on stdout must redirect it first.
type LoadPool struct {
	cfg    LoadPoolConfig
	lim    protocol.Limits
	ws     bool   // WebSocket, else raw TCP
	addr   string // host:port to dial
	wsURL  string // WebSocket: the URL given to ws.Dialer, with scheme ws
	local  []*net.TCPAddr
	engine *nbio.Engine

	next   atomic.Uint64 // round-robin over local
	ids    atomic.Int64  // LoadConn.ID
	open   atomic.Int64  // established connections
	maxMsg int           // largest WebSocket message accepted

	mu      sync.Mutex
	stopped bool
	conns   map[*LoadConn]struct{} // registered with the engine, not yet closed
}

// NewLoadPool checks cfg and starts the event loop.
func NewLoadPool(cfg LoadPoolConfig) (*LoadPool, error) {
	p := &LoadPool{cfg: cfg, conns: make(map[*LoadConn]struct{})}
	p.ids.Store(int64(cfg.IDBase))
	def := protocol.DefaultLimits()
	p.lim = cfg.Limits
	if p.lim.MaxFrame <= 0 {
		p.lim.MaxFrame = def.MaxFrame
	}
	if p.lim.MaxPayload <= 0 {
		p.lim.MaxPayload = def.MaxPayload
	}
	if p.lim.MaxString <= 0 {
		p.lim.MaxString = def.MaxString
	}
	if p.lim.MaxResume <= 0 {
		p.lim.MaxResume = def.MaxResume
	}
	p.maxMsg = 16 * (p.lim.MaxFrame + protocol.PrefixSize)

	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("bench: bad url %q: %w", cfg.URL, err)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("bench: %s: missing host", u.Redacted())
	}
	switch u.Scheme {
	case "ws", "http":
		p.ws = true
		p.addr = u.Host
		if u.Port() == "" {
			p.addr = net.JoinHostPort(u.Hostname(), "80")
		}
		// ws.Dialer takes ws:// only and parses the URL as a request URI:
		// no user information or fragment.
		wu := url.URL{Scheme: "ws", Host: u.Host, Path: u.Path, RawPath: u.RawPath, RawQuery: u.RawQuery}
		p.wsURL = wu.String()
	case "tcp":
		if u.Port() == "" {
			return nil, fmt.Errorf("bench: %s: missing port", u.Redacted())
		}
		p.addr = u.Host
	default:
		return nil, fmt.Errorf("bench: %s: unsupported scheme %q (want ws or tcp)", u.Redacted(), u.Scheme)
	}
	for _, s := range cfg.LocalAddrs {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("bench: bad local address %q: want an IP address", s)
		}
		p.local = append(p.local, &net.TCPAddr{IP: ip})
	}

	pollers := cfg.Pollers
	if pollers <= 0 {
		pollers = 1
	}
	p.engine = nbio.NewEngine(nbio.Config{Name: "herald-bench", NPoller: pollers})
	p.engine.OnData(p.onData)
	p.engine.OnClose(p.onClose)
	if err := p.engine.Start(); err != nil {
		return nil, fmt.Errorf("bench: start event loop: %w", err)
	}
	return p, nil
}

// Open returns the number of connections whose Connect succeeded and that
// have not closed yet.
func (p *LoadPool) Open() int { return int(p.open.Load()) }

// Stop ends every connection as Close does (DISCONNECT normal, then the
// socket is closed), fails the Connect calls in progress, waits for every
// OnClose callback, and stops the event loop. No goroutine of the pool is
// left when it returns. Later calls do nothing.
func (p *LoadPool) Stop() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	p.stopped = true
	conns := make([]*LoadConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		if c.closing.CompareAndSwap(false, true) {
			c.mu.Lock()
			established := c.state == loadStateOpen
			c.mu.Unlock()
			if established {
				_, _ = c.nc.Write(c.goodbye())
			}
		}
	}
	// The engine closes the remaining sockets (the kernel still sends what
	// was written, then FIN) and waits for their close callbacks.
	p.engine.Stop()
}

// Connect opens one connection: it dials (from the next of LocalAddrs),
// performs the WebSocket upgrade for a ws:// URL, sends CONNECT and waits
// for CONNECTED, then subscribes to every topic and waits for their REPLYs.
// It returns:
//
//   - a *protocol.Error when the server answers ERROR, to CONNECT or to a
//     SUBSCRIBE; when a fatal ERROR is followed by DISCONNECT, the error
//     wraps both the *protocol.Error and the protocol.Disconnect (use
//     errors.As);
//   - a protocol.Disconnect when the server answers DISCONNECT alone;
//   - ctx's error (wrapped) when ctx ends first;
//   - a wrapped dial, upgrade or socket error otherwise.
//
// A failed Connect leaves no connection behind (one refused at SUBSCRIBE
// is closed with DISCONNECT normal) and never reaches OnClose. ctx bounds
// the whole handshake; without a deadline Connect waits for the server as
// long as the socket lives. Connect is safe for concurrent use: callers
// run hundreds at once. Between CONNECT and its return, Connect waits on a
// small channel that the event loop feeds; an established connection has
// neither channel nor goroutine.
func (p *LoadPool) Connect(ctx context.Context, token, device string, topics []string, resume []protocol.Position) (*LoadConn, error) {
	return p.ConnectValue(ctx, nil, token, device, topics, resume)
}

// ConnectValue is Connect with the connection's Value set to value before
// any frame can reach OnPush.
func (p *LoadPool) ConnectValue(ctx context.Context, value any, token, device string, topics []string, resume []protocol.Position) (*LoadConn, error) {
	var subs []Sub
	if len(topics) > 0 {
		subs = make([]Sub, len(topics))
		for i, t := range topics {
			subs[i].Topic = t
		}
	}
	c, _, err := p.ConnectSubs(ctx, value, token, device, subs, resume)
	return c, err
}

// Sub is a subscription made by ConnectSubs. With Epoch, its SUBSCRIBE asks
// the server to recover the topic's messages after Seq (the last one
// processed, 0 if none): they reach OnPush before the REPLY.
type Sub struct {
	Topic string
	Epoch string
	Seq   uint64
}

// SubReply is the server's REPLY to one Sub: the topic stream's position
// (the subscription gets every message above Seq) and, for a Sub with an
// Epoch, whether what was missed was recovered, or why not.
type SubReply struct {
	Stream    string
	Epoch     string
	Seq       uint64
	Recovered bool
	Reason    string
}

// ConnectSubs is ConnectValue with subscriptions that may carry a position
// to recover from. It returns the REPLY to each, in the order of subs.
func (p *LoadPool) ConnectSubs(ctx context.Context, value any, token, device string, subs []Sub, resume []protocol.Position) (*LoadConn, []SubReply, error) {
	if p.isStopped() {
		return nil, nil, errLoadPoolStopped
	}
	c := &LoadConn{
		pool: p,
		id:   int(p.ids.Add(1) - 1),
		ws:   p.ws,
		// One answer per request (the SUBSCRIBEs are pipelined), a
		// DISCONNECT after a fatal ERROR, and a little slack.
		hs: make(chan *protocol.Frame, len(subs)+4),
	}
	c.value.Store(valueBox{value})

	raw, leftover, err := p.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	nc, err := nbio.NBConn(raw) // duplicates the descriptor and closes raw
	if err != nil {
		_ = raw.Close()
		return nil, nil, fmt.Errorf("bench: connect: %w", err)
	}
	c.nc = nc
	// Bytes read past the upgrade response (none, from a Herald server,
	// which speaks only after CONNECT) are parsed with the first data the
	// event loop reads.
	c.partial = leftover
	nc.SetSession(c)
	// Everything above is read by the poller goroutine. Taking the
	// connection's lock, which the poller takes around every read, orders
	// it before the poller's reads for the race detector too.
	nc.Lock()
	nc.Unlock()

	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		_ = nc.Close()
		return nil, nil, errLoadPoolStopped
	}
	p.conns[c] = struct{}{}
	_, err = p.engine.AddConn(nc)
	p.mu.Unlock()
	if err != nil {
		p.forget(c)
		_ = nc.Close()
		return nil, nil, fmt.Errorf("bench: connect: %w", err)
	}

	replies, err := c.handshake(ctx, token, device, subs, resume)
	if err != nil {
		return nil, nil, err
	}
	return c, replies, nil
}

// dial connects to the server and, for WebSocket, performs the upgrade. It
// returns the socket and any bytes read past the upgrade response.
func (p *LoadPool) dial(ctx context.Context) (net.Conn, []byte, error) {
	d := net.Dialer{}
	if n := len(p.local); n > 0 {
		d.LocalAddr = p.local[(p.next.Add(1)-1)%uint64(n)]
	}
	if !p.ws {
		raw, err := d.DialContext(ctx, "tcp", p.addr)
		if err != nil {
			return nil, nil, fmt.Errorf("bench: dial %s: %w", p.addr, err)
		}
		return raw, nil, nil
	}
	dialed := false
	wd := ws.Dialer{
		Header: ws.HandshakeHeaderString("User-Agent: " + LoadClientName + "\r\n"),
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			raw, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
			}
			dialed = true
			return raw, nil
		},
	}
	// Dial closes the socket when the upgrade fails, and answers ctx's
	// error when ctx ends first. No extension or subprotocol is offered,
	// so a response choosing one is refused.
	raw, br, _, err := wd.Dial(ctx, p.wsURL)
	if err != nil {
		if !dialed {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("bench: websocket upgrade %s: %w", p.addr, err)
	}
	var leftover []byte
	if br != nil { // the server spoke right after the upgrade response
		leftover = make([]byte, br.Buffered())
		_, _ = io.ReadFull(br, leftover)
		ws.PutReader(br)
	}
	return raw, leftover, nil
}

// forget removes c from the pool's registry.
func (p *LoadPool) forget(c *LoadConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// onData runs on a poller goroutine with whatever bytes were read.
func (p *LoadPool) onData(nc *nbio.Conn, data []byte) {
	if c, ok := nc.Session().(*LoadConn); ok {
		c.onData(data, time.Now())
	}
}

// onClose runs on a goroutine of the engine once per registered socket.
func (p *LoadPool) onClose(nc *nbio.Conn, err error) {
	c, ok := nc.Session().(*LoadConn)
	if !ok {
		return
	}
	p.forget(c)
	c.mu.Lock()
	prev := c.state
	c.state = loadStateClosed
	if c.closeErr == nil {
		c.closeErr = err
	}
	if c.closing.Load() && c.disc == nil {
		c.closeErr = ErrLoadConnClosed
	}
	if c.closeErr == nil {
		c.closeErr = io.EOF
	}
	if c.hs != nil {
		close(c.hs) // wakes Connect
		c.hs = nil
	}
	d, cerr := c.disc, c.closeErr
	if prev == loadStateOpen {
		p.open.Add(-1)
	}
	c.mu.Unlock()
	if prev == loadStateOpen && p.cfg.OnClose != nil {
		if d != nil {
			cerr = nil
		}
		p.cfg.OnClose(c, d, cerr)
	}
}

// Connection states.
const (
	loadStateHandshake = iota // Connect in progress
	loadStateOpen             // Connect succeeded
	loadStateClosed           // the socket is gone
)

// LoadConn is one connection of a LoadPool.
type LoadConn struct {
	pool *LoadPool
	id   int
	ws   bool
	nc   *nbio.Conn

	session string // set by Connect before it returns
	value   atomic.Value
	closing atomic.Bool // Close, Abort or Stop was called

	mu       sync.Mutex
	state    int
	hs       chan *protocol.Frame // non-nil while Connect waits for answers
	disc     *protocol.Disconnect // the server's DISCONNECT
	closeErr error                // why the socket closed

	// Reader state, owned by the poller goroutine.
	partial []byte    // unparsed tail of the stream
	msg     []byte    // WebSocket: payload of a fragmented message so far
	msgOp   ws.OpCode // WebSocket: opcode of that message; OpContinuation when none
	// ACK to send once the frames of the current read are handled
	// (AckAfterRead).
	ackStream string
	ackSeq    uint64
}

// valueBox lets atomic.Value hold any value, nil included.
type valueBox struct{ v any }

// ID returns the connection's index in its pool: unique, assigned in the
// order Connect calls start (failed ones use up an index too).
func (c *LoadConn) ID() int { return c.id }

// Session returns the session id from CONNECTED.
func (c *LoadConn) Session() string { return c.session }

// Value returns what SetValue (or ConnectValue) stored; safe for concurrent
// use.
func (c *LoadConn) Value() any { return c.value.Load().(valueBox).v }

// SetValue stores the caller's per-connection state; safe for concurrent
// use.
func (c *LoadConn) SetValue(v any) { c.value.Store(valueBox{v}) }

// LocalAddr returns the local address of the socket.
func (c *LoadConn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// Write sends f without blocking: what the kernel does not take at once is
// queued by the event loop. It is safe for concurrent use.
func (c *LoadConn) Write(f *protocol.Frame) error {
	lb := loadBufs.Get().(*loadBuf)
	lb.b = protocol.AppendFramed(lb.b[:0], f)
	err := c.writeFramed(lb)
	if err != nil {
		if c.closing.Load() {
			return ErrLoadConnClosed
		}
		return fmt.Errorf("bench: write: %w", err)
	}
	return nil
}

// writeFramed writes the length-prefixed frames in lb, as one binary
// message on WebSocket, and recycles the buffer.
func (c *LoadConn) writeFramed(lb *loadBuf) error {
	out := lb.b
	if c.ws {
		// The message is built after the frames, in the same buffer.
		n := len(lb.b)
		lb.appendWSFrame(ws.OpBinary, lb.b)
		out = lb.b[n:]
	}
	_, err := c.nc.Write(out) // nbio copies what it cannot write at once
	if cap(lb.b) <= 64<<10 {
		lb.b = lb.b[:0]
		loadBufs.Put(lb)
	}
	return err
}

// Ack acknowledges every message of stream up to seq. A server treats an
// ACK without stream or seq as a protocol error and closes the connection,
// so those are refused here instead (PUSHes of streams that are not stored
// carry no seq and cannot be acknowledged).
func (c *LoadConn) Ack(stream string, seq uint64) error {
	if stream == "" || seq == 0 {
		return fmt.Errorf("bench: ack: %w: ack needs stream and seq", protocol.ErrMissingField)
	}
	return c.Write(&protocol.Frame{Type: protocol.TypeAck, Stream: stream, Seq: seq})
}

// AckAfterRead acknowledges every message of stream up to seq once the
// frames of the read being handled are: one cumulative ACK per read, as
// the Go SDK's AutoAck does, rather than one per PUSH, which a server's
// frame rate limit would refuse for a device catching up on a backlog.
// Call it only from OnPush (or OnReply), on the poller goroutine.
func (c *LoadConn) AckAfterRead(stream string, seq uint64) {
	if stream == "" || seq == 0 {
		return
	}
	if c.ackStream != stream {
		c.flushAck()
		c.ackStream = stream
	}
	c.ackSeq = max(c.ackSeq, seq)
}

// flushAck sends the ACK AckAfterRead asked for, if any.
func (c *LoadConn) flushAck() {
	if c.ackSeq != 0 {
		_ = c.Ack(c.ackStream, c.ackSeq)
		c.ackSeq = 0
	}
}

// Close sends DISCONNECT normal (and, on WebSocket, a close frame) and
// closes the connection; the kernel sends what was written, then FIN.
// OnClose follows, with an error wrapping ErrLoadConnClosed. Closing a
// connection that is already closed or closing returns ErrLoadConnClosed.
func (c *LoadConn) Close() error {
	if !c.closing.CompareAndSwap(false, true) {
		return ErrLoadConnClosed
	}
	_, err := c.nc.Write(c.goodbye())
	// The server may answer and close before the shutdown: that is fine.
	c.shutdown(syscall.SHUT_RDWR, false)
	switch {
	case errors.Is(err, net.ErrClosed):
		return ErrLoadConnClosed
	case err != nil:
		return fmt.Errorf("bench: close: %w", err)
	}
	return nil
}

// Abort drops the connection at once, without DISCONNECT or WebSocket
// close: with SO_LINGER 0 the socket is closed with RST, so the server's
// read fails with a connection reset, to simulate a client whose network
// went away. OnClose follows, with an error wrapping ErrLoadConnClosed.
// Aborting a connection that is already closed or closing returns
// ErrLoadConnClosed.
func (c *LoadConn) Abort() error {
	if !c.closing.CompareAndSwap(false, true) {
		return ErrLoadConnClosed
	}
	if !c.shutdown(syscall.SHUT_RD, true) {
		return ErrLoadConnClosed
	}
	return nil
}

// goodbye returns DISCONNECT normal, and a close frame after it on
// WebSocket, ready to write.
func (c *LoadConn) goodbye() []byte {
	b := protocol.AppendFramed(nil, protocol.NewDisconnect(protocol.DisconnectNormal).Frame())
	if !c.ws {
		return b
	}
	var lb loadBuf
	lb.appendWSFrame(ws.OpBinary, b)
	lb.appendWSFrame(ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))
	return lb.b
}

// shutdown ends the socket without closing its descriptor on this
// goroutine. nbio's poller looks connections up by descriptor number: a
// descriptor closed here while the poller holds an event for it could be
// reused by a connection another Connect is opening, which the stale event
// would then hit. So the socket is only shut down (how), the descriptor stays
// allocated, and the poller, woken by the hang-up, closes it on its own
// goroutine. With linger0, SO_LINGER 0 is set first so that this close
// sends RST. The connection's lock is held across the check and the
// system calls, so a descriptor that nbio closed (and that may be reused)
// meanwhile is never touched. It reports whether the socket was still
// open.
func (c *LoadConn) shutdown(how int, linger0 bool) bool {
	nc := c.nc
	nc.Lock()
	closed, _ := nc.IsClosed()
	var err error
	if !closed {
		var rc syscall.RawConn
		if rc, err = nc.SyscallConn(); err == nil {
			cerr := rc.Control(func(fd uintptr) {
				if linger0 {
					err = setsockoptLinger(syscall.SetsockoptLinger, fd, &syscall.Linger{Onoff: 1, Linger: 0})
					if err != nil {
						return
					}
				}
				err = shutdownFD(syscall.Shutdown, fd, how)
			})
			if err == nil {
				err = cerr
			}
		}
	}
	nc.Unlock()
	if closed {
		return false
	}
	if err != nil {
		_ = nc.Close() // not connected any more: close it the plain way
	}
	return true
}

// shutdownFD calls shutdown, whose descriptor type differs between
// platforms, with a descriptor from syscall.RawConn.Control.
func shutdownFD[H ~int | ~uintptr](shutdown func(H, int) error, fd uintptr, how int) error {
	return shutdown(H(fd), how)
}

// setsockoptLinger calls SetsockoptLinger, whose descriptor type differs
// between platforms, with a descriptor from syscall.RawConn.Control.
func setsockoptLinger[H ~int | ~uintptr](set func(H, int, int, *syscall.Linger) error, fd uintptr, l *syscall.Linger) error {
	return set(H(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, l)
}

// fail closes the connection on the poller goroutine with err.
func (c *LoadConn) fail(err error) {
	_ = c.nc.CloseWithError(err)
}

// handshake runs CONNECT and the SUBSCRIBEs. On failure the connection is
// closed and forgotten.
func (c *LoadConn) handshake(ctx context.Context, token, device string, subs []Sub, resume []protocol.Position) ([]SubReply, error) {
	hs := c.hs
	err := c.Write(&protocol.Frame{
		Type:    protocol.TypeConnect,
		Version: protocol.Version,
		Token:   token,
		Device:  device,
		Client:  LoadClientName,
		Resume:  resume,
	})
	if err != nil {
		return nil, c.abandon(ctx, hs, fmt.Errorf("bench: connect: %w", err), false)
	}
	var perr *protocol.Error
	for c.session == "" {
		f, err := c.await(ctx, hs, perr)
		if err != nil {
			return nil, c.abandon(ctx, hs, err, false)
		}
		switch f.Type {
		case protocol.TypeConnected:
			if f.Session == "" {
				return nil, c.abandon(ctx, hs, fmt.Errorf("bench: connect: %w: CONNECTED without session", protocol.ErrMissingField), false)
			}
			c.session = f.Session
		case protocol.TypeError:
			perr = &protocol.Error{ID: f.ID, Code: protocol.ErrorCode(f.Code), Text: f.Reason}
			if !perr.Code.Fatal() {
				return nil, c.abandon(ctx, hs, perr, false)
			}
			// A DISCONNECT follows; wait for its advice.
		case protocol.TypeDisconnect:
			d := protocol.DisconnectFrom(f)
			if perr != nil {
				return nil, c.abandon(ctx, hs, &loadRefusal{perr: perr, disc: d}, false)
			}
			return nil, c.abandon(ctx, hs, d, false)
		}
	}

	var replies []SubReply
	if len(subs) > 0 {
		replies = make([]SubReply, len(subs))
		// All SUBSCRIBEs in one write; the server answers them in order.
		lb := loadBufs.Get().(*loadBuf)
		lb.b = lb.b[:0]
		for i, s := range subs {
			f := &protocol.Frame{Type: protocol.TypeSubscribe, ID: uint32(i + 1), Topic: s.Topic}
			if s.Epoch != "" {
				f.Epoch, f.Seq = s.Epoch, s.Seq
			}
			lb.b = protocol.AppendFramed(lb.b, f)
		}
		if err := c.writeFramed(lb); err != nil {
			return nil, c.abandon(ctx, hs, fmt.Errorf("bench: subscribe: %w", err), false)
		}
		for pending := len(subs); pending > 0; {
			f, err := c.await(ctx, hs, perr)
			if err != nil {
				return nil, c.abandon(ctx, hs, err, false)
			}
			switch f.Type {
			case protocol.TypeReply:
				if f.ID >= 1 && int(f.ID) <= len(subs) {
					replies[f.ID-1] = SubReply{Stream: f.Stream, Epoch: f.Epoch, Seq: f.Seq, Recovered: f.Recovered, Reason: f.Reason}
					pending--
				}
			case protocol.TypeError:
				perr = &protocol.Error{ID: f.ID, Code: protocol.ErrorCode(f.Code), Text: f.Reason}
				if !perr.Code.Fatal() {
					if perr.Text == "" && f.ID >= 1 && int(f.ID) <= len(subs) {
						perr.Text = "subscribe " + subs[f.ID-1].Topic
					}
					return nil, c.abandon(ctx, hs, perr, true)
				}
			case protocol.TypeDisconnect:
				d := protocol.DisconnectFrom(f)
				if perr != nil {
					return nil, c.abandon(ctx, hs, &loadRefusal{perr: perr, disc: d}, false)
				}
				return nil, c.abandon(ctx, hs, d, false)
			}
		}
	}

	c.mu.Lock()
	if c.state == loadStateClosed {
		err := c.closeErr
		c.mu.Unlock()
		return nil, fmt.Errorf("bench: connect: connection closed: %w", err)
	}
	c.state = loadStateOpen
	c.hs = nil
	c.pool.open.Add(1)
	c.mu.Unlock()
	return replies, nil
}

// await returns the next handshake frame, or why none will come.
// await returns the next handshake frame. If the connection fails first,
// the ERROR the server sent before (perr), if any, is the better reason.
func (c *LoadConn) await(ctx context.Context, hs chan *protocol.Frame, perr *protocol.Error) (*protocol.Frame, error) {
	f, err := c.awaitFrame(ctx, hs)
	if err != nil && perr != nil {
		return nil, perr
	}
	return f, err
}

func (c *LoadConn) awaitFrame(ctx context.Context, hs chan *protocol.Frame) (*protocol.Frame, error) {
	select {
	case f, ok := <-hs:
		if ok {
			return f, nil
		}
		c.mu.Lock()
		err := c.closeErr
		c.mu.Unlock()
		if errors.Is(err, errLoadPoolStopped) || c.pool.isStopped() {
			return nil, errLoadPoolStopped
		}
		return nil, fmt.Errorf("bench: connect: connection closed during handshake: %w", err)
	case <-ctx.Done():
		return nil, fmt.Errorf("bench: connect: %w", ctx.Err())
	}
}

func (p *LoadPool) isStopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopped
}

// abandon ends a connection whose Connect failed, waits for its close and
// returns err. polite sends DISCONNECT normal first (a SUBSCRIBE was refused
// but the session is fine); otherwise the socket is shut down, with RST when
// ctx ended (the server may be stuck).
func (c *LoadConn) abandon(ctx context.Context, hs chan *protocol.Frame, err error, polite bool) error {
	if c.closing.CompareAndSwap(false, true) {
		if polite {
			_, _ = c.nc.Write(c.goodbye())
		}
		c.shutdown(syscall.SHUT_RDWR, ctx.Err() != nil)
	}
	// Wait for the close callback so that the pool has forgotten c and no
	// frame of c is in flight when Connect returns.
	for range hs {
	}
	return err
}

// onData parses what the poller read. Complete frames are decoded in place;
// only the tail of an incomplete one is copied, into c.partial, until the
// rest arrives.
func (c *LoadConn) onData(data []byte, now time.Time) {
	if c.closing.Load() {
		return
	}
	buf := data
	if len(c.partial) > 0 {
		c.partial = append(c.partial, data...)
		buf = c.partial
	}
	// One frame, reused for every frame decoded from this read: a
	// connection keeps none between reads.
	f := loadFrames.Get().(*protocol.Frame)
	var (
		n    int
		need int
		err  error
	)
	if c.ws {
		n, need, err = c.parseWS(buf, f, now)
	} else {
		n, need, err = c.parseFramed(buf, f, now, false)
	}
	*f = protocol.Frame{}
	loadFrames.Put(f)
	c.flushAck()
	if err != nil {
		c.partial, c.msg = nil, nil
		c.fail(err)
		return
	}
	rest := buf[n:]
	if len(rest) == 0 {
		c.partial = nil
		return
	}
	if len(c.partial) > 0 && n == 0 {
		return // nothing consumed: c.partial already holds the tail
	}
	tail := make([]byte, len(rest), max(len(rest), need, 64))
	copy(tail, rest)
	c.partial = tail
}

// parseFramed handles the length-prefixed frames at the start of buf and
// returns how many bytes it used and, when buf ends inside a frame, the size
// of that whole frame if known. Frames are decoded into f. inMessage means buf is a WebSocket message,
// which must end on a frame boundary.
func (c *LoadConn) parseFramed(buf []byte, f *protocol.Frame, now time.Time, inMessage bool) (used, need int, err error) {
	for used < len(buf) && !c.closing.Load() {
		body, n, err := protocol.NextFramed(buf[used:], c.pool.lim)
		if err != nil {
			return used, 0, err
		}
		if n == 0 {
			if inMessage {
				return used, 0, fmt.Errorf("%w: binary message ends inside a frame", protocol.ErrMalformed)
			}
			if len(buf)-used >= protocol.PrefixSize {
				need = protocol.PrefixSize + int(binary.BigEndian.Uint32(buf[used:]))
			}
			return used, need, nil
		}
		if err := protocol.DecodeBinary(body, f, c.pool.lim); err != nil {
			return used, 0, err
		}
		used += n
		if err := c.dispatch(f, now); err != nil {
			return used, 0, err
		}
	}
	return used, 0, nil
}

// errWSClosed reports a WebSocket close frame without a DISCONNECT before it.
type errWSClosed struct {
	code   ws.StatusCode
	reason string
}

func (e *errWSClosed) Error() string {
	return fmt.Sprintf("bench: websocket closed by the server: status %d %q", e.code, e.reason)
}

// wsHeaderReaders recycles the readers that ws.ReadHeader parses buffered
// bytes from.
var wsHeaderReaders = sync.Pool{New: func() any { return new(bytes.Reader) }}

// parseWS handles the WebSocket frames at the start of buf, as parseFramed
// does the protocol's frames.
func (c *LoadConn) parseWS(buf []byte, f *protocol.Frame, now time.Time) (used, need int, err error) {
	r := wsHeaderReaders.Get().(*bytes.Reader)
	defer func() {
		r.Reset(nil)
		wsHeaderReaders.Put(r)
	}()
	for used < len(buf) && !c.closing.Load() {
		b := buf[used:]
		r.Reset(b)
		h, err := ws.ReadHeader(r)
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return used, 0, nil // the header is not complete yet
		}
		if err != nil {
			return used, 0, fmt.Errorf("%w: websocket: %w", protocol.ErrMalformed, err)
		}
		// Servers do not mask, but masked frames are tolerated: the state
		// is neither client nor server side, which CheckHeader would hold
		// to the masking rule.
		var state ws.State
		if c.msgOp != ws.OpContinuation {
			state = state.Set(ws.StateFragmented)
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return used, 0, fmt.Errorf("%w: websocket: %w", protocol.ErrMalformed, err)
		}
		if h.Length > int64(c.pool.maxMsg) || int64(len(c.msg))+h.Length > int64(c.pool.maxMsg) {
			return used, 0, fmt.Errorf("%w: websocket message over %d bytes", protocol.ErrTooLarge, c.pool.maxMsg)
		}
		hdr := len(b) - r.Len()
		total := hdr + int(h.Length)
		if len(b) < total {
			return used, total, nil
		}
		payload := b[hdr:total]
		if h.Masked {
			ws.Cipher(payload, h.Mask, 0)
		}
		used += total
		if h.OpCode.IsControl() {
			if err := c.wsControl(h.OpCode, payload); err != nil {
				return used, 0, err
			}
			continue
		}
		switch {
		case h.OpCode != ws.OpContinuation && h.Fin:
			err = c.wsMessage(h.OpCode, payload, f, now)
		case h.OpCode != ws.OpContinuation:
			c.msgOp = h.OpCode
			c.msg = append([]byte(nil), payload...)
		default:
			c.msg = append(c.msg, payload...)
			if h.Fin {
				msg, op := c.msg, c.msgOp
				c.msg, c.msgOp = nil, ws.OpContinuation
				err = c.wsMessage(op, msg, f, now)
			}
		}
		if err != nil {
			return used, 0, err
		}
	}
	return used, 0, nil
}

// wsMessage handles one complete WebSocket message.
func (c *LoadConn) wsMessage(op ws.OpCode, msg []byte, f *protocol.Frame, now time.Time) error {
	if op == ws.OpBinary {
		_, _, err := c.parseFramed(msg, f, now, true)
		return err
	}
	frames, err := protocol.DecodeJSONBatch(msg, c.pool.lim)
	if err != nil {
		return err
	}
	for i := range frames {
		if c.closing.Load() {
			return nil
		}
		if err := c.dispatch(&frames[i], now); err != nil {
			return err
		}
	}
	return nil
}

// wsControl answers a WebSocket ping or close frame.
func (c *LoadConn) wsControl(op ws.OpCode, payload []byte) error {
	switch op {
	case ws.OpPing:
		var lb loadBuf
		lb.appendWSFrame(ws.OpPong, payload)
		_, _ = c.nc.Write(lb.b)
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(payload)
		var lb loadBuf
		if code.Empty() {
			code = ws.StatusNoStatusRcvd
			lb.appendWSFrame(ws.OpClose, nil)
		} else {
			lb.appendWSFrame(ws.OpClose, ws.NewCloseFrameBody(code, "")) // echo the code
		}
		_, _ = c.nc.Write(lb.b)
		return &errWSClosed{code: code, reason: reason}
	}
	return nil
}

// dispatch handles one decoded frame on the poller goroutine. f is reused
// afterwards.
func (c *LoadConn) dispatch(f *protocol.Frame, now time.Time) error {
	switch f.Type {
	case protocol.TypePush:
		if cb := c.pool.cfg.OnPush; cb != nil {
			cb(c, f, now)
		}
		return nil
	case protocol.TypePing:
		if err := c.Write(&protocol.Frame{Type: protocol.TypePong, Time: f.Time}); err != nil && !c.closing.Load() {
			return err
		}
		return nil
	case protocol.TypePong:
		return nil
	case protocol.TypeReply:
		if cb := c.pool.cfg.OnReply; cb != nil {
			cb(c, f)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.Type == protocol.TypeDisconnect && c.disc == nil {
		d := protocol.DisconnectFrom(f)
		c.disc = &d
	}
	if c.hs == nil {
		return nil // REPLY or ERROR after Connect: the pool sends no requests then
	}
	cp := new(protocol.Frame)
	*cp = *f
	select {
	case c.hs <- cp:
		return nil
	default:
		return fmt.Errorf("%w: too many unexpected frames during the handshake", protocol.ErrMalformed)
	}
}

// loadBuf is an encoding buffer. As an io.Writer it appends to b, which
// lets ws.WriteHeader write into it.
type loadBuf struct{ b []byte }

func (lb *loadBuf) Write(p []byte) (int, error) {
	lb.b = append(lb.b, p...)
	return len(p), nil
}

// appendWSFrame appends one masked client WebSocket frame (FIN set) of type
// op carrying payload, which may be lb's own bytes.
func (lb *loadBuf) appendWSFrame(op ws.OpCode, payload []byte) {
	h := ws.Header{Fin: true, OpCode: op, Masked: true, Mask: ws.NewMask(), Length: int64(len(payload))}
	_ = ws.WriteHeader(lb, h) // cannot fail: lb.Write does not, and the length fits
	n := len(lb.b)
	lb.b = append(lb.b, payload...)
	ws.Cipher(lb.b[n:], h.Mask, 0)
}

// loadFrames recycles the frames the reader decodes into.
var loadFrames = sync.Pool{New: func() any { return new(protocol.Frame) }}

// loadBufs recycles encoding buffers.
var loadBufs = sync.Pool{New: func() any { return &loadBuf{b: make([]byte, 0, 512)} }}

// loadRefusal is an ERROR followed by a DISCONNECT. It wraps both.
type loadRefusal struct {
	perr *protocol.Error
	disc protocol.Disconnect
}

func (r *loadRefusal) Error() string   { return r.perr.Error() + "; " + r.disc.Error() }
func (r *loadRefusal) Unwrap() []error { return []error{r.perr, r.disc} }
