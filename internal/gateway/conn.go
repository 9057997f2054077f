package gateway

import (
	"errors"
	"net"
	"sync/atomic"
	"time"

	"github.com/lesismal/llib/std/crypto/tls"
	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/nbhttp/websocket"

	"github.com/herald-push/herald/protocol"
)

// ErrClosed is returned by Send on a connection that is closing or closed.
var ErrClosed = errors.New("gateway: connection closed")

// Transport is the kind of socket a connection arrived on.
type Transport uint8

// Transports.
const (
	WebSocket Transport = iota + 1
	TCP
	SSE // Server-Sent Events down, HTTP POST up
)

// String names the transport for logs and metric labels.
func (t Transport) String() string {
	switch t {
	case WebSocket:
		return "ws"
	case TCP:
		return "tcp"
	case SSE:
		return "sse"
	}
	return "unknown"
}

// Encoding is the frame encoding a connection speaks.
type Encoding uint8

// Encodings.
const (
	Binary Encoding = iota
	JSON
)

// Connection states. A connection moves forward only:
// open → authenticated → closing → closed.
const (
	stateOpen uint32 = iota
	stateAuthenticated
	stateClosing
	stateClosed
)

// Conn is one client connection. Its exported methods are safe for
// concurrent use. An idle connection costs this struct, the WebSocket or
// TCP state of the event loop, and nothing else: no goroutine, no buffer.
type Conn struct {
	id        uint64    // immutable
	g         *Gateway  // immutable
	transport Transport // immutable

	// WebSocket frame guard state (see wsScan), in what would otherwise
	// be padding. Only the event loop goroutine that reads this
	// connection touches these and the buckets below.
	wsHN    uint8
	wsFlags uint8
	wsLeft  uint32

	ws *websocket.Conn // immutable; set for WebSocket
	nc *nbio.Conn      // immutable; set for TCP and SSE (its session is then the *sseConn)
	tc *tls.Conn       // immutable; set for TCP with TLS

	state    atomic.Uint32
	encoding atomic.Uint32 // Encoding; set from the first message
	lastRead atomic.Int64  // unix nanoseconds of the last frame read
	opened   int64         // unix nanoseconds; immutable

	session atomic.Value // handler data; always the same type

	// reason is why the connection closed; set once, by the first closer.
	reason atomic.Pointer[protocol.Disconnect]

	// partial holds the start of an incomplete TCP frame. Only the event
	// loop goroutine that reads this connection touches it.
	partial *[]byte

	// Timing wheel membership, guarded by Gateway.wheel.mu.
	prev, next *Conn
	slot       int32

	wsMsg uint32 // WebSocket frame guard state, with wsHN above

	frames bucket // frames per second, control frames included
	subs   bucket // SUBSCRIBE and UNSUBSCRIBE requests per second
}

// ID returns the connection's id, unique within the process.
func (c *Conn) ID() uint64 { return c.id }

// Transport returns the transport the connection arrived on.
func (c *Conn) Transport() Transport { return c.transport }

// TransportName returns the transport's name, as in logs and presence.
func (c *Conn) TransportName() string { return c.transport.String() }

// CloseLagging closes a connection that the server could not keep up
// with (a fan-out queue overflowed): the client reconnects and recovers
// what it missed from its positions.
func (c *Conn) CloseLagging() {
	d := protocol.NewDisconnect(protocol.DisconnectServerError)
	d.Reason = "server overloaded: reconnect and recover from your positions"
	c.Close(d)
}

// Encoding returns the encoding the connection speaks.
func (c *Conn) Encoding() Encoding { return Encoding(c.encoding.Load()) }

// RemoteAddr returns the client's address.
func (c *Conn) RemoteAddr() string {
	switch {
	case c.ws != nil:
		return remoteString(c.ws.RemoteAddr())
	case c.nc != nil:
		return remoteString(c.nc.RemoteAddr())
	}
	return ""
}

// Opened returns when the connection was accepted.
func (c *Conn) Opened() time.Time { return time.Unix(0, c.opened) }

// Session returns the value stored by SetSession, or nil.
func (c *Conn) Session() any {
	return c.session.Load()
}

// SetSession stores handler data on the connection.
// Every call for a connection must pass the same concrete type.
func (c *Conn) SetSession(v any) { c.session.Store(v) }

// Authenticate marks the connection as authenticated: from now on it may
// send any frame, and the idle timeout replaces the auth timeout. It
// reports false if the connection is already closing.
func (c *Conn) Authenticate() bool {
	return c.state.CompareAndSwap(stateOpen, stateAuthenticated)
}

// Authenticated reports whether Authenticate was called and the connection
// is not closing.
func (c *Conn) Authenticated() bool { return c.state.Load() == stateAuthenticated }

// Closed reports whether the connection is closing or closed.
func (c *Conn) Closed() bool { return c.state.Load() >= stateClosing }

// SendFrame encodes f for this connection and writes it.
func (c *Conn) SendFrame(f *protocol.Frame) error {
	return c.Send(protocol.Encode(f))
}

// maxBatch caps the bytes of several frames merged into one message.
const maxBatch = 64 << 10

// Send writes frames to the connection. Several frames go out in one
// message and one write system call. Send never blocks on the network: if
// the client does not read, data queues in the event loop up to the
// outbound limit, and past it the connection is closed as a slow consumer.
func (c *Conn) Send(frames ...*protocol.Encoded) error {
	return c.SendBatch(protocol.NewBatch(frames...))
}

// Close sends the client a DISCONNECT with d and closes the connection. It
// is idempotent; the first reason wins.
func (c *Conn) Close(d protocol.Disconnect) {
	c.close(d, wsCloseCode(d.Code))
}

// close is Close with the WebSocket close status to send.
func (c *Conn) close(d protocol.Disconnect, wsStatus int) {
	for {
		s := c.state.Load()
		if s >= stateClosing {
			return
		}
		if c.state.CompareAndSwap(s, stateClosing) {
			break
		}
	}
	c.setReason(d)
	// Best effort: the socket may be full or gone.
	if c.transport == SSE {
		c.closeSSE(d)
		return
	}
	e := protocol.Encode(d.Frame())
	if c.nc != nil {
		if c.tc != nil {
			_, _ = c.tc.Write(e.Framed())
		} else {
			_, _ = c.nc.Write(e.Framed())
		}
		closeSocket(c.nc) // not c.nc.Close(): see closeSocket
		return
	}
	if c.Encoding() == JSON {
		_ = c.ws.WriteMessage(websocket.TextMessage, e.JSON())
	} else {
		_ = c.ws.WriteMessage(websocket.BinaryMessage, e.Framed())
	}
	_ = c.ws.WriteClose(wsStatus, d.Code.String())
	if nc, ok := c.ws.Conn.(*nbio.Conn); ok {
		closeSocket(nc) // not c.ws.Close(): see closeSocket
		return
	}
	_ = c.ws.Close()
}

// Fail sends an ERROR frame and, if the code is fatal, a DISCONNECT, and
// closes the connection.
func (c *Conn) Fail(e *protocol.Error, d protocol.Disconnect) {
	_ = c.SendFrame(e.Frame())
	if e.Code.Fatal() {
		c.Close(d)
	}
}

func (c *Conn) setReason(d protocol.Disconnect) {
	c.reason.CompareAndSwap(nil, &d)
}

// closed is called once by the event loop after the socket is closed.
func (c *Conn) closed(err error) protocol.Disconnect {
	c.state.Store(stateClosed)
	switch {
	case errors.Is(err, nbio.ErrOverflow):
		c.setReason(protocol.NewDisconnect(protocol.DisconnectSlowConsumer))
	default:
		c.setReason(protocol.NewDisconnect(protocol.DisconnectConnectionLost))
	}
	return *c.reason.Load()
}

// wsCloseCode maps a disconnect to a WebSocket close status: 1000 for a
// normal close, 1001 for a shutdown, 4000+ (application range) otherwise.
func wsCloseCode(code protocol.DisconnectCode) int {
	switch code {
	case protocol.DisconnectNormal:
		return 1000
	case protocol.DisconnectShutdown:
		return 1001
	}
	return 4000 + int(code)%1000
}

// deadline returns when the connection expires if nothing more is read.
func (c *Conn) deadline(authTimeout, idleTimeout time.Duration) time.Time {
	if c.state.Load() == stateOpen {
		return time.Unix(0, c.opened).Add(authTimeout)
	}
	return time.Unix(0, c.lastRead.Load()).Add(idleTimeout)
}

// remoteString formats an address without allocating when it is nil.
func remoteString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
