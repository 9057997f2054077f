package client

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/herald-push/herald/protocol"
)

// Encoding selects how a Conn encodes the frames it writes. A Conn reads both
// encodings over WebSocket whatever its Encoding: text messages are decoded
// as JSON, binary messages as length-prefixed binary frames.
type Encoding uint8

const (
	// Binary writes length-prefixed binary frames: binary WebSocket messages,
	// or the byte stream of a TCP connection. It is the default.
	Binary Encoding = iota
	// JSON writes frames as JSON text WebSocket messages. WebSocket only.
	JSON
)

// String returns "binary" or "json".
func (e Encoding) String() string {
	switch e {
	case Binary:
		return "binary"
	case JSON:
		return "json"
	}
	return "encoding(" + strconv.Itoa(int(e)) + ")"
}

// Default values of DialOptions.
const (
	// DefaultWriteTimeout bounds one frame write unless
	// DialOptions.WriteTimeout says otherwise.
	DefaultWriteTimeout = 10 * time.Second
	// closeTimeout bounds the WebSocket close handshake in Conn.Close.
	closeTimeout = time.Second
	// initialReadBuffer is the TCP read buffer a Conn starts with; it grows
	// to fit the largest frame seen.
	initialReadBuffer = 4 << 10
)

// DialOptions configures DialConn. The zero value dials with the binary
// encoding, the default limits and no TLS configuration.
type DialOptions struct {
	// Encoding of the frames the Conn writes: Binary (default) or JSON.
	// JSON is only possible over WebSocket.
	Encoding Encoding
	// TLSConfig is used for wss:// and tls:// URLs; nil means the defaults
	// of crypto/tls. ServerName defaults to the URL's host.
	TLSConfig *tls.Config
	// LocalAddr is the source IP address to dial from, with an optional
	// port ("127.0.0.2" or "127.0.0.2:0"). Load generators use several
	// loopback addresses to get more than 64k source ports.
	LocalAddr string
	// Limits bound the frames the Conn accepts. Zero fields take their value
	// from protocol.DefaultLimits.
	Limits protocol.Limits
	// HTTPHeader is sent with the WebSocket upgrade request.
	HTTPHeader http.Header
	// WriteTimeout bounds each write; a write that times out closes the
	// connection. Zero means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxMessage is the largest WebSocket message the Conn reads; a binary
	// message may carry several frames. Zero means
	// 16 × (Limits.MaxFrame + protocol.PrefixSize).
	MaxMessage int
}

func (o DialOptions) withDefaults() DialOptions {
	def := protocol.DefaultLimits()
	if o.Limits.MaxFrame <= 0 {
		o.Limits.MaxFrame = def.MaxFrame
	}
	if o.Limits.MaxPayload <= 0 {
		o.Limits.MaxPayload = def.MaxPayload
	}
	if o.Limits.MaxString <= 0 {
		o.Limits.MaxString = def.MaxString
	}
	if o.Limits.MaxResume <= 0 {
		o.Limits.MaxResume = def.MaxResume
	}
	if o.Limits.MaxConnect <= 0 {
		o.Limits.MaxConnect = def.MaxConnect
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = 16 * (o.Limits.MaxFrame + protocol.PrefixSize)
	}
	return o
}

// Conn is one client connection to a Herald server over WebSocket or raw
// TCP. It does not reconnect, answer pings or keep any state beyond the
// socket: it is the building block of Client and the tool of tests and
// load generators.
//
// WriteFrame, WriteFrames, WriteRaw and Close are safe for concurrent use.
// ReadFrame must be called by one goroutine at a time. Close unblocks a
// ReadFrame in progress.
type Conn struct {
	enc      Encoding
	lim      protocol.Limits
	wtimeout time.Duration

	ws  *websocket.Conn // nil on TCP
	raw net.Conn        // the TCP (or TLS) connection; under ws, the socket it runs on

	wmu  sync.Mutex
	wbuf []byte

	// Reader state, owned by the goroutine calling ReadFrame.
	rbuf       []byte           // TCP: received bytes are rbuf[rpos:rend]
	rpos, rend int              //
	rerrNext   error            // TCP: read error to report once rbuf holds no whole frame
	msg        []byte           // WebSocket: unread rest of a binary message
	batch      []protocol.Frame // WebSocket: unread frames of a JSON message
	rerr       error            // sticky: the connection is unusable

	closed    atomic.Bool
	closeOnce sync.Once
}

// DialConn connects to a Herald server and returns the connection before
// any frame is exchanged; call Handshake next. The URL is ws:// or wss://
// for WebSocket (http:// and https:// are accepted as synonyms), tcp:// or
// tls:// with host:port for the raw TCP transport. ctx bounds the dial, the
// TLS handshake and the WebSocket upgrade, not the connection's life.
func DialConn(ctx context.Context, rawURL string, opts DialOptions) (*Conn, error) {
	opts = opts.withDefaults()
	if opts.Encoding > JSON {
		return nil, fmt.Errorf("herald: unknown encoding %d", opts.Encoding)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("herald: bad url %q: %w", rawURL, err)
	}
	laddr, err := localTCPAddr(opts.LocalAddr)
	if err != nil {
		return nil, err
	}
	d := &net.Dialer{LocalAddr: laddr}
	switch u.Scheme {
	case "ws", "wss", "http", "https":
		return dialWS(ctx, rawURL, d, opts)
	case "tcp", "tls":
		if opts.Encoding == JSON {
			return nil, fmt.Errorf("herald: %s: the JSON encoding needs WebSocket", rawURL)
		}
		if u.Host == "" {
			return nil, fmt.Errorf("herald: %s: missing host:port", rawURL)
		}
		return dialTCP(ctx, u, d, opts)
	}
	return nil, fmt.Errorf("herald: %s: unsupported scheme %q (want ws, wss, tcp or tls)", rawURL, u.Scheme)
}

func localTCPAddr(s string) (*net.TCPAddr, error) {
	if s == "" {
		return nil, nil
	}
	host, port := s, "0"
	if h, p, err := net.SplitHostPort(s); err == nil {
		host, port = h, p
	}
	ip := net.ParseIP(host)
	n, err := strconv.Atoi(port)
	if ip == nil || err != nil || n < 0 || n > 65535 {
		return nil, fmt.Errorf("herald: bad local address %q: want an IP address with an optional port", s)
	}
	return &net.TCPAddr{IP: ip, Port: n}, nil
}

func dialTCP(ctx context.Context, u *url.URL, d *net.Dialer, opts DialOptions) (*Conn, error) {
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("herald: dial %s: %w", u.Redacted(), err)
	}
	if u.Scheme == "tls" {
		cfg := opts.TLSConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = nc.Close()
			return nil, fmt.Errorf("herald: dial %s: tls: %w", u.Redacted(), err)
		}
		nc = tc
	}
	return &Conn{
		enc:      opts.Encoding,
		lim:      opts.Limits,
		wtimeout: opts.WriteTimeout,
		raw:      nc,
		rbuf:     make([]byte, initialReadBuffer),
	}, nil
}

func dialWS(ctx context.Context, rawURL string, d *net.Dialer, opts DialOptions) (*Conn, error) {
	// The transport is private to this dial so that the socket under the
	// WebSocket can be captured: Close uses it to bound the close handshake.
	var (
		mu  sync.Mutex
		raw net.Conn
	)
	tr := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nc, err := d.DialContext(ctx, network, addr)
			if err == nil {
				mu.Lock()
				raw = nc
				mu.Unlock()
			}
			return nc, err
		},
		TLSClientConfig: opts.TLSConfig.Clone(),
	}
	defer tr.CloseIdleConnections()
	ws, _, err := websocket.Dial(ctx, rawURL, &websocket.DialOptions{
		HTTPClient:      &http.Client{Transport: tr},
		HTTPHeader:      opts.HTTPHeader,
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("herald: dial %s: %w", redact(rawURL), err)
	}
	ws.SetReadLimit(int64(opts.MaxMessage))
	mu.Lock()
	defer mu.Unlock()
	return &Conn{
		enc:      opts.Encoding,
		lim:      opts.Limits,
		wtimeout: opts.WriteTimeout,
		ws:       ws,
		raw:      raw,
	}, nil
}

func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return rawURL
	}
	return u.Redacted()
}

// LocalAddr returns the local address of the underlying socket, or nil if
// it is not known.
func (c *Conn) LocalAddr() net.Addr {
	if c.raw == nil {
		return nil
	}
	return c.raw.LocalAddr()
}

// RemoteAddr returns the remote address of the underlying socket (a proxy's
// when one is used), or nil if it is not known.
func (c *Conn) RemoteAddr() net.Addr {
	if c.raw == nil {
		return nil
	}
	return c.raw.RemoteAddr()
}

// WriteFrame encodes f with the Conn's encoding and writes it as one
// WebSocket message, or onto the TCP stream. It is safe for concurrent use.
// A failed or timed-out write closes the connection.
func (c *Conn) WriteFrame(f *protocol.Frame) error {
	return c.WriteFrames(f)
}

// WriteFrames writes several frames as one WebSocket message (a JSON array
// with the JSON encoding, length-prefixed frames back to back with the
// binary one) or in one write on TCP. It is safe for concurrent use.
func (c *Conn) WriteFrames(fs ...*protocol.Frame) error {
	if len(fs) == 0 {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	buf := c.wbuf[:0]
	text := c.enc == JSON
	switch {
	case !text:
		for _, f := range fs {
			buf = protocol.AppendFramed(buf, f)
		}
	case len(fs) == 1:
		buf = protocol.AppendJSON(buf, fs[0])
	default:
		buf = append(buf, '[')
		for i, f := range fs {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = protocol.AppendJSON(buf, f)
		}
		buf = append(buf, ']')
	}
	err := c.writeLocked(buf, text, c.wtimeout)
	if cap(buf) <= 64<<10 {
		c.wbuf = buf[:0]
	} else {
		c.wbuf = nil
	}
	return err
}

// WriteRaw writes msg as it is: as one WebSocket message, text or binary, or
// onto the TCP stream (text is then ignored). It exists for tests that send
// the server garbage. It is safe for concurrent use.
func (c *Conn) WriteRaw(msg []byte, text bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.writeLocked(msg, text, c.wtimeout)
}

// writeFrameTimeout writes one frame with a write timeout other than the
// Conn's own.
func (c *Conn) writeFrameTimeout(f *protocol.Frame, timeout time.Duration) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	var buf []byte
	if c.enc == JSON {
		buf = protocol.AppendJSON(nil, f)
	} else {
		buf = protocol.AppendFramed(nil, f)
	}
	return c.writeLocked(buf, c.enc == JSON, min(timeout, c.wtimeout))
}

func (c *Conn) writeLocked(b []byte, text bool, timeout time.Duration) error {
	if c.closed.Load() {
		return fmt.Errorf("herald: write: %w", net.ErrClosed)
	}
	var err error
	if c.ws != nil {
		typ := websocket.MessageBinary
		if text {
			typ = websocket.MessageText
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		err = c.ws.Write(ctx, typ, b)
		cancel()
	} else {
		_ = c.raw.SetWriteDeadline(time.Now().Add(timeout))
		_, err = c.raw.Write(b)
		if err != nil {
			// A partial write leaves the stream unframed: the connection
			// cannot be used any more.
			c.abort()
		}
	}
	if err != nil {
		if c.closed.Load() {
			return fmt.Errorf("herald: write: %w", net.ErrClosed)
		}
		return fmt.Errorf("herald: write: %w", err)
	}
	return nil
}

// ReadFrame returns the next frame from the server. A WebSocket message or a
// TCP read that carries several frames is split, and the frames are returned
// one at a time. Errors are final: once ReadFrame has failed, the connection
// is unusable and every later call returns the same error. After Close the
// error wraps net.ErrClosed; a frame the Conn cannot decode gives an error
// wrapping one of the protocol package's decoding errors.
//
// ReadFrame blocks until a frame arrives or the connection fails; to bound
// it, Close the Conn from another goroutine (for example with
// time.AfterFunc).
func (c *Conn) ReadFrame() (*protocol.Frame, error) {
	if c.rerr != nil {
		return nil, c.rerr
	}
	var (
		f   *protocol.Frame
		err error
	)
	if c.ws != nil {
		f, err = c.readWS()
	} else {
		f, err = c.readTCP()
	}
	if err != nil {
		if c.closed.Load() {
			err = fmt.Errorf("herald: read: %w", net.ErrClosed)
		} else {
			err = fmt.Errorf("herald: read: %w", err)
		}
		c.rerr = err
		return nil, err
	}
	return f, nil
}

// Buffered reports whether ReadFrame has a frame to return without reading
// from the network: the rest of a WebSocket message or of a TCP read that
// carried several frames. Call it from the goroutine that calls ReadFrame.
func (c *Conn) Buffered() bool {
	if c.rerr != nil {
		return false
	}
	if c.ws != nil {
		return len(c.batch) > 0 || len(c.msg) > 0
	}
	_, n, err := protocol.NextFramed(c.rbuf[c.rpos:c.rend], c.lim)
	return n > 0 || err != nil
}

func (c *Conn) readWS() (*protocol.Frame, error) {
	for {
		if len(c.batch) > 0 {
			f := new(protocol.Frame)
			*f = c.batch[0]
			c.batch[0] = protocol.Frame{}
			c.batch = c.batch[1:]
			return f, nil
		}
		if len(c.msg) > 0 {
			body, n, err := protocol.NextFramed(c.msg, c.lim)
			if err != nil {
				return nil, err
			}
			if n == 0 {
				return nil, fmt.Errorf("%w: binary message ends inside a frame", protocol.ErrMalformed)
			}
			c.msg = c.msg[n:]
			f := new(protocol.Frame)
			if err := protocol.DecodeBinary(body, f, c.lim); err != nil {
				return nil, err
			}
			return f, nil
		}
		c.msg, c.batch = nil, nil
		typ, data, err := c.ws.Read(context.Background())
		if err != nil {
			return nil, err
		}
		if typ == websocket.MessageText {
			if c.batch, err = protocol.DecodeJSONBatch(data, c.lim); err != nil {
				return nil, err
			}
		} else {
			c.msg = data
		}
	}
}

func (c *Conn) readTCP() (*protocol.Frame, error) {
	for {
		buf := c.rbuf[c.rpos:c.rend]
		body, n, err := protocol.NextFramed(buf, c.lim)
		if err != nil {
			return nil, err
		}
		if n > 0 {
			c.rpos += n
			if c.rpos == c.rend {
				c.rpos, c.rend = 0, 0
			}
			f := new(protocol.Frame)
			if err := protocol.DecodeBinary(body, f, c.lim); err != nil {
				return nil, err
			}
			return f, nil
		}
		if c.rerrNext != nil {
			if errors.Is(c.rerrNext, io.EOF) && len(buf) > 0 {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, c.rerrNext
		}
		// Make room for the rest of the frame that starts at rpos.
		need := protocol.PrefixSize
		if len(buf) >= protocol.PrefixSize {
			need += int(binary.BigEndian.Uint32(buf)) // at most MaxFrame: NextFramed checked
		}
		if len(c.rbuf)-c.rpos < need {
			if need > len(c.rbuf) {
				nb := make([]byte, max(need, 2*len(c.rbuf)))
				c.rend = copy(nb, buf)
				c.rbuf = nb
			} else {
				c.rend = copy(c.rbuf, buf)
			}
			c.rpos = 0
		}
		n, err = c.raw.Read(c.rbuf[c.rend:])
		c.rend += n
		if err != nil {
			c.rerrNext = err
		}
	}
}

// Close closes the connection. On WebSocket it attempts the close
// handshake, bounded to a second. It unblocks ReadFrame and writes in
// progress. Only the first call does anything; later calls return nil.
func (c *Conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if c.ws == nil {
			err = c.raw.Close()
			return
		}
		if c.raw != nil {
			_ = c.raw.SetDeadline(time.Now().Add(closeTimeout))
		}
		if err = c.ws.Close(websocket.StatusNormalClosure, ""); errors.Is(err, net.ErrClosed) {
			err = nil
		}
	})
	return err
}

// abort closes the connection at once, without a WebSocket close handshake.
func (c *Conn) abort() {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		if c.ws != nil {
			_ = c.ws.CloseNow()
			return
		}
		_ = c.raw.Close()
	})
}

// UserAgent is what Handshake sends as CONNECT.Client.
const UserAgent = "herald-go/" + Version

// Version is the version of this client library.
const Version = "0.1.0"

// Handshake sends CONNECT and reads until the server answers. It returns
// the CONNECTED frame, or:
//
//   - a *protocol.Error when the server answers ERROR; when the ERROR is
//     fatal and followed by DISCONNECT, the error wraps both the
//     *protocol.Error and the protocol.Disconnect (use errors.As);
//   - a protocol.Disconnect when the server answers DISCONNECT alone;
//   - ctx.Err() (wrapped) when ctx ends first; the Conn is then closed.
//
// PINGs that arrive before CONNECTED are answered; other frames are
// discarded. resume lists the stream positions to resume from.
func (c *Conn) Handshake(ctx context.Context, token, device string, resume []protocol.Position) (*protocol.Frame, error) {
	if ctx.Done() == nil {
		return c.handshake(token, device, resume)
	}
	aborted := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		c.abort() // unblocks ReadFrame
		close(aborted)
	})
	f, err := c.handshake(token, device, resume)
	if !stop() {
		<-aborted
		return nil, fmt.Errorf("herald: handshake: %w", ctx.Err())
	}
	return f, err
}

func (c *Conn) handshake(token, device string, resume []protocol.Position) (*protocol.Frame, error) {
	connect := &protocol.Frame{
		Type:    protocol.TypeConnect,
		Version: protocol.Version,
		Token:   token,
		Device:  device,
		Client:  UserAgent,
		Resume:  resume,
	}
	c.fitConnect(connect)
	err := c.WriteFrame(connect)
	if err != nil {
		return nil, fmt.Errorf("herald: handshake: %w", err)
	}
	var perr *protocol.Error
	for {
		f, err := c.ReadFrame()
		if err != nil {
			if perr != nil {
				return nil, perr
			}
			return nil, fmt.Errorf("herald: handshake: %w", err)
		}
		switch f.Type {
		case protocol.TypeConnected:
			return f, nil
		case protocol.TypeError:
			perr = &protocol.Error{ID: f.ID, Code: protocol.ErrorCode(f.Code), Text: f.Reason}
			if !perr.Code.Fatal() {
				return nil, perr
			}
			// A DISCONNECT follows; read it for its advice.
		case protocol.TypeDisconnect:
			d := protocol.DisconnectFrom(f)
			if perr != nil {
				return nil, &refusal{perr: perr, disc: d}
			}
			return nil, d
		case protocol.TypePing:
			if err := c.WriteFrame(&protocol.Frame{Type: protocol.TypePong, Time: f.Time}); err != nil {
				return nil, fmt.Errorf("herald: handshake: %w", err)
			}
		}
	}
}

// refusal is an ERROR followed by a DISCONNECT. It wraps both.
type refusal struct {
	perr *protocol.Error
	disc protocol.Disconnect
}

func (r *refusal) Error() string   { return r.perr.Error() + "; " + r.disc.Error() }
func (r *refusal) Unwrap() []error { return []error{r.perr, r.disc} }

// fitConnect drops the last resume positions of f, a CONNECT, until it fits
// in Limits.MaxConnect: a server reads nothing larger before it has
// accepted CONNECT. Callers put the positions that matter most first.
func (c *Conn) fitConnect(f *protocol.Frame) {
	size := func(n int) int {
		g := *f
		g.Resume = f.Resume[:n]
		if c.enc == JSON {
			return len(protocol.AppendJSON(nil, &g))
		}
		return len(protocol.AppendBinary(nil, &g))
	}
	if size(len(f.Resume)) <= c.lim.MaxConnect {
		return
	}
	// The most positions that fit: lo fits (or is 0), hi does not.
	lo, hi := 0, len(f.Resume)
	for hi-lo > 1 {
		if mid := (lo + hi) / 2; size(mid) <= c.lim.MaxConnect {
			lo = mid
		} else {
			hi = mid
		}
	}
	f.Resume = f.Resume[:lo]
}
