package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/protocol"
)

// Errors returned by Client.
var (
	// ErrClosed is the terminal cause after Close, and what calls on a
	// closed Client return.
	ErrClosed = errors.New("herald: client closed")
	// ErrNotConnected is returned by Ack, Ping and Subscribe before Connect
	// has succeeded, and by Ack and Ping while the Client is reconnecting.
	ErrNotConnected = errors.New("herald: not connected")
	// ErrConnectionLost is returned by Ping when the connection ends before
	// the PONG arrives.
	ErrConnectionLost = errors.New("herald: connection lost")
	// ErrHeartbeatTimeout is the cause of a disconnection when nothing was
	// read from the server for twice the heartbeat interval.
	ErrHeartbeatTimeout = errors.New("herald: heartbeat timeout")
	// ErrConnecting is returned by Connect when it is already in progress or
	// has already succeeded.
	ErrConnecting = errors.New("herald: Connect already called")
)

// Defaults of Config.
const (
	// DefaultMinBackoff is the default Config.MinBackoff.
	DefaultMinBackoff = 100 * time.Millisecond
	// DefaultMaxBackoff is the default Config.MaxBackoff.
	DefaultMaxBackoff = 10 * time.Second
	// DefaultConnectTimeout is the default Config.ConnectTimeout.
	DefaultConnectTimeout = 10 * time.Second
	// DefaultBuffer is the default Config.Buffer.
	DefaultBuffer = 1024
)

// Config configures a Client. URLs and one of Token and TokenFunc are
// required; everything else has a default.
type Config struct {
	// URLs of the server, tried in order on every (re)connect: ws://,
	// wss://, tcp://host:port or tls://host:port.
	URLs []string
	// Token is the client token sent in CONNECT.
	Token string
	// TokenFunc, when set, is called before every connection attempt and
	// wins over Token. With it, a refusal for an expired token is retried
	// instead of being final.
	TokenFunc func(ctx context.Context) (string, error)
	// Device identifies this device of the user.
	Device string
	// Topics are subscribed after every (re)connect, together with the
	// topics added by Subscribe.
	Topics []string
	// AutoAck acknowledges the PUSHes of the user's inbox ("u:<user>")
	// after they have been handed to the application (OnMessage returned
	// or the message was queued on Messages): one cumulative ACK for the
	// last of the pushes that arrived together (one server message or
	// read), so a device catching up on a backlog sends few. Topic and
	// broadcast positions are kept by the Client and need no ACK.
	AutoAck bool

	// DialOptions apply to every connection.
	DialOptions

	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts: exponential from MinBackoff, capped at MaxBackoff, with full
	// jitter. Defaults DefaultMinBackoff and DefaultMaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// ConnectTimeout bounds one attempt on one URL: dial, TLS, WebSocket
	// upgrade and CONNECT/CONNECTED. Default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// PingInterval, when set, caps the heartbeat interval the server
	// announces in CONNECTED; it also applies when the server announces
	// none. The Client sends PING every interval and treats the connection
	// as dead, and reconnects, when nothing was read for twice the interval
	// (provided a PING has gone unanswered for an interval, so that a stall
	// of this process is not blamed on the server). With neither an
	// announced interval nor PingInterval there is no heartbeat.
	PingInterval time.Duration

	// OnMessage, when set, is called for every message, in order, from the
	// Client's read goroutine. When it is nil, messages are delivered on
	// the Messages channel instead.
	//
	// While OnMessage runs nothing else is read, so it must not block for
	// long and must not wait for Subscribe, Unsubscribe, Ping or Close:
	// they need the read goroutine (call them from another goroutine).
	OnMessage func(Message)
	// Buffer is the capacity of the Messages channel, used when OnMessage
	// is nil. When the channel is full, the Client stops reading until the
	// application catches up. Default DefaultBuffer.
	Buffer int
	// OnState, when set, is called on every state change with its cause,
	// from one goroutine at a time. The same rules as for OnMessage apply.
	OnState func(State, error)
	// OnUnrecovered, when set, is called when the server could not send
	// what was missed on stream (a topic, "t:<topic>", or the broadcast
	// stream "b") while the Client was disconnected: its history no longer
	// held the position, or its epoch changed. Messages of the stream flow
	// again from the server's current position; the application should
	// re-fetch the state it derives from the stream from its backend. The
	// same rules as for OnMessage apply.
	OnUnrecovered func(stream, reason string)
	// Logger receives the Client's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Message is one message pushed by the server.
type Message struct {
	Stream  string    // "u:<user>", "t:<topic>" or "b" (broadcast)
	Epoch   string    // epoch of the stream's storage
	ID      string    // message id, unique per app: drop duplicates by it
	Seq     uint64    // sequence number in the stream; 0 for unsequenced messages
	Payload []byte    // application data; owned by the receiver
	Time    time.Time // when the server accepted the message; zero if unknown
}

// State is the connection state of a Client.
type State uint8

// Client states, reported to Config.OnState.
const (
	// StateIdle: Connect has not been called yet.
	StateIdle State = iota
	// StateConnecting: a connection attempt is in progress.
	StateConnecting
	// StateConnected: the handshake succeeded; messages flow.
	StateConnected
	// StateDisconnected: an attempt failed or the connection ended; the
	// cause is passed along. A reconnection follows unless the Client is
	// closed.
	StateDisconnected
	// StateClosed: the Client has stopped for good; the cause is Err().
	StateClosed
)

// String returns the state's name.
func (s State) String() string {
	switch s {
	case StateIdle:
		return "idle"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Client is a managed connection to Herald: it connects, subscribes,
// delivers messages, keeps the connection alive with heartbeats and
// reconnects with exponential backoff and jitter, resuming every stream
// from the last message it delivered. Its methods are safe for concurrent
// use.
//
// A Client runs one read goroutine and one heartbeat goroutine per
// connection; Close stops and waits for all of them.
type Client struct {
	cfg  Config
	log  *slog.Logger
	msgs chan Message // nil when OnMessage is set

	ctx    context.Context // ends when the Client stops
	cancel context.CancelFunc

	lastID atomic.Uint32

	mu         sync.Mutex
	state      State
	connecting bool // Connect in progress
	started    bool // Connect succeeded: run owns the connection
	closing    bool // Close called or terminal cause found: no new connection
	err        error
	sess       *session
	ready      chan struct{} // closed while sess != nil
	topics     []string      // subscribed after every (re)connect
	pos        map[string]*streamPos
	posTick    uint64
	lastGap    gap // the last gap that ended a session

	wg         sync.WaitGroup // Connect calls and the run goroutine
	finishOnce sync.Once
	done       chan struct{}
}

type streamPos struct {
	epoch string
	seq   uint64
	tick  uint64 // when last updated, to keep the newest under MaxResume
}

// New checks cfg and returns a Client that is not connected yet.
func New(cfg Config) (*Client, error) {
	if len(cfg.URLs) == 0 {
		return nil, errors.New("herald: Config.URLs is empty")
	}
	if cfg.Token == "" && cfg.TokenFunc == nil {
		return nil, errors.New("herald: Config needs Token or TokenFunc")
	}
	for _, u := range cfg.URLs {
		if cfg.Encoding == JSON && (strings.HasPrefix(u, "tcp://") || strings.HasPrefix(u, "tls://")) {
			return nil, fmt.Errorf("herald: %s: the JSON encoding needs WebSocket", u)
		}
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.MinBackoff > cfg.MaxBackoff {
		return nil, fmt.Errorf("herald: MinBackoff %v exceeds MaxBackoff %v", cfg.MinBackoff, cfg.MaxBackoff)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = DefaultBuffer
	}
	cfg.DialOptions = cfg.DialOptions.withDefaults()
	cfg.URLs = slices.Clone(cfg.URLs)
	c := &Client{
		cfg:   cfg,
		log:   cfg.Logger,
		ready: make(chan struct{}),
		pos:   make(map[string]*streamPos),
		done:  make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if cfg.OnMessage == nil {
		c.msgs = make(chan Message, cfg.Buffer)
	}
	for _, t := range cfg.Topics {
		if t == "" {
			return nil, errors.New("herald: empty topic in Config.Topics")
		}
		if !slices.Contains(c.topics, t) {
			c.topics = append(c.topics, t)
		}
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Connect makes the first connection. It tries the URLs in order, retrying
// with backoff until the handshake succeeds, ctx ends or the server refuses
// the client for good (a bad token, for example): that error is returned,
// wrapping the *protocol.Error and protocol.Disconnect the server sent,
// and the Client is closed. When ctx ends first, Connect returns an error
// wrapping ctx.Err() and the last attempt's error, and may be called again.
//
// Once connected, the Client subscribes to the configured topics (the
// SUBSCRIBE frames are written before Connect returns; refusals are
// logged) and then runs in the background, reconnecting whenever the
// connection is lost, until Close or a DISCONNECT that forbids
// reconnecting.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.Lock()
	switch {
	case c.closing:
		err := c.err
		c.mu.Unlock()
		return err
	case c.connecting || c.started:
		c.mu.Unlock()
		return ErrConnecting
	}
	c.connecting = true
	c.wg.Add(1)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.connecting = false
		c.mu.Unlock()
		c.wg.Done()
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.ctx, cancel)()

	for attempt := 0; ; attempt++ {
		c.setState(StateConnecting, nil)
		s, err := c.dial(ctx, "")
		if err == nil {
			if !c.install(s) {
				c.hangUp(s)
				return ErrClosed
			}
			c.startSession(s)
			go c.run(s)
			return nil
		}
		if c.ctx.Err() != nil {
			return ErrClosed
		}
		if c.terminal(err) {
			c.finish(err)
			return err
		}
		c.setState(StateDisconnected, err)
		if ctx.Err() != nil {
			return fmt.Errorf("herald: connect: %w (last error: %w)", ctx.Err(), err)
		}
		c.log.Info("herald: connect failed", "err", err)
		if !sleep(ctx, c.backoff(attempt)) {
			if c.ctx.Err() != nil {
				return ErrClosed
			}
			return fmt.Errorf("herald: connect: %w (last error: %w)", ctx.Err(), err)
		}
	}
}

// Messages returns the channel messages are delivered on when
// Config.OnMessage is nil (it returns nil otherwise). The channel holds
// Config.Buffer messages; when it is full the Client stops reading from the
// connection until there is room, so a consumer that falls behind slows the
// server down (which may eventually disconnect it as a slow consumer). The
// channel is closed when the Client stops.
func (c *Client) Messages() <-chan Message {
	return c.msgs
}

// Subscribe subscribes to topic and waits for the server's answer: nil, a
// *protocol.Error (for example CodeForbidden) or ctx's error. A successful
// subscription is renewed after every reconnect until Unsubscribe. If the
// connection is lost before the answer, the request is repeated on the next
// connection. While the Client is reconnecting, Subscribe waits for the
// connection.
func (c *Client) Subscribe(ctx context.Context, topic string) error {
	if topic == "" {
		return errors.New("herald: empty topic")
	}
	for {
		s, err := c.waitSession(ctx)
		if err != nil {
			return err
		}
		r := &request{ch: make(chan error, 1), subscribe: true, topic: topic}
		f := c.subscribeFrame(topic)
		if !s.register(f, r) {
			continue // the session ended under us; wait for the next
		}
		if err := s.conn.WriteFrame(f); err != nil {
			s.fail(err)
		}
		select {
		case err := <-r.ch:
			return err
		case <-s.done:
			select {
			case err := <-r.ch:
				return err
			default:
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Unsubscribe ends the subscription to topic: it is no longer renewed on
// reconnect, and its stream position is forgotten. When connected,
// Unsubscribe waits for the server's answer (nil or a *protocol.Error); when
// not, or when the connection is lost before the answer, there is nothing
// left to undo and it returns nil.
func (c *Client) Unsubscribe(ctx context.Context, topic string) error {
	if topic == "" {
		return errors.New("herald: empty topic")
	}
	c.mu.Lock()
	c.topics = slices.DeleteFunc(c.topics, func(t string) bool { return t == topic })
	delete(c.pos, topicStream(topic))
	s, closing, err := c.sess, c.closing, c.err
	c.mu.Unlock()
	if closing {
		return err
	}
	if s == nil {
		return nil
	}
	r := &request{ch: make(chan error, 1), topic: topic}
	f := &protocol.Frame{Type: protocol.TypeUnsubscribe, ID: c.newID(), Topic: topic}
	if !s.register(f, r) {
		return nil
	}
	if err := s.conn.WriteFrame(f); err != nil {
		s.fail(err)
	}
	select {
	case err := <-r.ch:
		return err
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Ack acknowledges every message of stream up to and including seq. It is
// not needed with Config.AutoAck. It returns ErrNotConnected when there is
// no connection.
func (c *Client) Ack(stream string, seq uint64) error {
	if stream == "" || seq == 0 {
		return errors.New("herald: ack needs a stream and a sequence number")
	}
	s, err := c.session()
	if err != nil {
		return err
	}
	return s.conn.WriteFrame(&protocol.Frame{Type: protocol.TypeAck, Stream: stream, Seq: seq})
}

// Ping sends PING and returns the time until the matching PONG arrived.
func (c *Client) Ping(ctx context.Context) (time.Duration, error) {
	s, err := c.session()
	if err != nil {
		return 0, err
	}
	ch := make(chan struct{}, 1)
	start := time.Now()
	key, err := s.sendPing(ch)
	if err != nil {
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-s.done:
		return 0, ErrConnectionLost
	case <-ctx.Done():
		s.forgetPing(key)
		return 0, ctx.Err()
	}
}

// Session returns the session id and the node the server announced in
// CONNECTED, or empty strings when not connected.
func (c *Client) Session() (session, node string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sess == nil {
		return "", ""
	}
	return c.sess.connected.Session, c.sess.connected.Node
}

// State returns the current state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Close sends DISCONNECT (normal) when connected, closes the connection,
// stops every goroutine of the Client and waits for them; then it closes
// Messages and Done. It returns nil; calling it again does nothing.
//
// Close must not be called from OnMessage or OnState (it would wait for
// itself); start a goroutine for it there.
func (c *Client) Close() error {
	c.mu.Lock()
	first := !c.closing
	c.closing = true
	if c.err == nil {
		c.err = ErrClosed
	}
	s := c.sess
	c.mu.Unlock()
	c.cancel()
	if first && s != nil {
		c.hangUp(s)
	}
	c.wg.Wait()
	c.finish(ErrClosed)
	return nil
}

// Done is closed when the Client has stopped for good and all its
// goroutines have ended: after Close, a DISCONNECT that forbids
// reconnecting, or a final refusal of the handshake. Err tells why.
func (c *Client) Done() <-chan struct{} {
	return c.done
}

// Err returns why the Client stopped: ErrClosed after Close, a
// protocol.Disconnect for a DISCONNECT that forbids reconnecting, or the
// handshake error (wrapping *protocol.Error) of a final refusal. It returns
// nil while the Client runs.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closing {
		return nil
	}
	return c.err
}

// hangUp says goodbye on s and closes it.
func (c *Client) hangUp(s *session) {
	_ = s.conn.writeFrameTimeout(protocol.NewDisconnect(protocol.DisconnectNormal).Frame(), closeTimeout)
	s.fail(ErrClosed)
}

// finish makes the Client's stop final. It runs once, after the last
// goroutine that could report a state has ended (or from that goroutine).
func (c *Client) finish(cause error) {
	c.finishOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		if c.err == nil {
			c.err = cause
		}
		err := c.err
		c.state = StateClosed
		c.mu.Unlock()
		c.cancel()
		if c.cfg.OnState != nil {
			c.cfg.OnState(StateClosed, err)
		}
		if c.msgs != nil {
			close(c.msgs)
		}
		close(c.done)
	})
}

func (c *Client) setState(st State, cause error) {
	c.mu.Lock()
	c.state = st
	c.mu.Unlock()
	if cause != nil {
		c.log.Debug("herald: state", "state", st, "cause", cause)
	} else {
		c.log.Debug("herald: state", "state", st)
	}
	if c.cfg.OnState != nil {
		c.cfg.OnState(st, cause)
	}
}

// terminal reports whether err forbids connecting again.
func (c *Client) terminal(err error) bool {
	if errors.Is(err, ErrClosed) {
		return true
	}
	var pe *protocol.Error
	hasPE := errors.As(err, &pe)
	refreshable := hasPE && pe.Code == protocol.CodeTokenExpired && c.cfg.TokenFunc != nil
	var d protocol.Disconnect
	if errors.As(err, &d) {
		return !d.Reconnect && !refreshable
	}
	if hasPE {
		switch pe.Code {
		case protocol.CodeInternal:
			return false
		case protocol.CodeTokenExpired:
			return !refreshable
		}
		return pe.Code.Fatal()
	}
	return false
}

// backoff returns the wait before reconnection attempt n (0-based):
// uniformly random in [0, min(MaxBackoff, MinBackoff·2ⁿ)].
func (c *Client) backoff(n int) time.Duration {
	return backoff(c.cfg.MinBackoff, c.cfg.MaxBackoff, n)
}

func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// sleep waits for d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// dial tries alt (when set) and then every URL once, and returns the first
// session that completes the handshake.
func (c *Client) dial(ctx context.Context, alt string) (*session, error) {
	urls := c.cfg.URLs
	if alt != "" {
		urls = append([]string{alt}, urls...)
	}
	var errs []error
	for _, u := range urls {
		s, err := c.attempt(ctx, u)
		if err == nil {
			return s, nil
		}
		if len(urls) == 1 || c.terminal(err) || ctx.Err() != nil {
			return nil, err
		}
		c.log.Debug("herald: attempt failed", "url", redact(u), "err", err)
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

func (c *Client) attempt(ctx context.Context, u string) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	token := c.cfg.Token
	if c.cfg.TokenFunc != nil {
		var err error
		if token, err = c.cfg.TokenFunc(ctx); err != nil {
			return nil, fmt.Errorf("herald: token: %w", err)
		}
		if token == "" {
			return nil, errors.New("herald: token: TokenFunc returned an empty token")
		}
	}
	conn, err := DialConn(ctx, u, c.cfg.DialOptions)
	if err != nil {
		return nil, err
	}
	connected, err := conn.Handshake(ctx, token, c.cfg.Device, c.resume(true))
	if err != nil {
		conn.abort()
		return nil, fmt.Errorf("herald: %s: %w", redact(u), err)
	}
	c.log.Info("herald: connected", "url", redact(u), "session", connected.Session,
		"node", connected.Node, "heartbeat", connected.Heartbeat)
	return newSession(conn, u, connected, c.interval(connected.Heartbeat)), nil
}

func (c *Client) interval(announced time.Duration) time.Duration {
	iv := announced
	if p := c.cfg.PingInterval; p > 0 && (iv <= 0 || p < iv) {
		iv = p
	}
	return iv
}

// install makes s the current session unless the Client is closing. On
// success run must be started: install counts it in wg.
func (c *Client) install(s *session) bool {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
	}
	c.sess = s
	close(c.ready)
	if !c.started {
		c.started = true
		c.wg.Add(1) // the run goroutine
	}
	c.mu.Unlock()
	c.setState(StateConnected, nil)
	return true
}

// uninstall removes s as the current session.
func (c *Client) uninstall(s *session) {
	c.mu.Lock()
	if c.sess == s {
		c.sess = nil
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
}

// session returns the current session or why there is none.
func (c *Client) session() (*session, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closing:
		return nil, c.err
	case c.sess == nil:
		return nil, ErrNotConnected
	}
	return c.sess, nil
}

// waitSession returns the current session, waiting for a reconnection in
// progress.
func (c *Client) waitSession(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		s, ready, started, closing, err := c.sess, c.ready, c.started, c.closing, c.err
		c.mu.Unlock()
		switch {
		case closing:
			return nil, err
		case s != nil:
			return s, nil
		case !started:
			return nil, ErrNotConnected
		}
		select {
		case <-ready:
		case <-c.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// startSession starts s's heartbeat and subscribes to the remembered
// topics. The answers are handled by the read loop.
func (c *Client) startSession(s *session) {
	if s.interval > 0 {
		s.hb.Add(1)
		go c.heartbeat(s)
	}
	c.mu.Lock()
	topics := slices.Clone(c.topics)
	c.mu.Unlock()
	for chunk := range slices.Chunk(topics, 64) {
		frames := make([]*protocol.Frame, 0, len(chunk))
		for _, t := range chunk {
			f := c.subscribeFrame(t)
			if !s.register(f, &request{ch: make(chan error, 1), subscribe: true, topic: t, renew: true}) {
				return
			}
			frames = append(frames, f)
		}
		if err := s.conn.WriteFrames(frames...); err != nil {
			s.fail(err)
			return
		}
	}
}

func (c *Client) newID() uint32 {
	for {
		if id := c.lastID.Add(1); id != 0 {
			return id
		}
	}
}

// subscribeFrame returns a SUBSCRIBE for topic that carries the topic
// stream's position when the Client has one, so the server can recover
// what was missed.
func (c *Client) subscribeFrame(topic string) *protocol.Frame {
	f := &protocol.Frame{Type: protocol.TypeSubscribe, ID: c.newID(), Topic: topic}
	c.mu.Lock()
	if p := c.pos[topicStream(topic)]; p != nil {
		f.Epoch, f.Seq = p.epoch, p.seq
	}
	c.mu.Unlock()
	return f
}

func topicStream(topic string) string { return "t:" + topic }

// addTopic remembers topic for reconnects.
func (c *Client) addTopic(topic string) {
	c.mu.Lock()
	if !slices.Contains(c.topics, topic) {
		c.topics = append(c.topics, topic)
	}
	c.mu.Unlock()
}

// resume returns the positions to send in CONNECT: the most recently
// updated streams, at most Limits.MaxResume of them. With broadcast and no
// position for the broadcast stream yet, it asks for one (a position
// without an epoch), so that broadcasts missed after this connection can be
// recovered.
func (c *Client) resume(broadcast bool) []protocol.Position {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []protocol.Position
	if broadcast && c.pos["b"] == nil {
		out = append(out, protocol.Position{Stream: "b"})
	}
	if len(c.pos) == 0 {
		return out
	}
	type entry struct {
		p    protocol.Position
		tick uint64
	}
	es := make([]entry, 0, len(c.pos))
	for stream, p := range c.pos {
		es = append(es, entry{protocol.Position{Stream: stream, Epoch: p.epoch, Seq: p.seq}, p.tick})
	}
	slices.SortFunc(es, func(a, b entry) int { return cmp.Compare(b.tick, a.tick) })
	if n := c.cfg.Limits.MaxResume - len(out); len(es) > n {
		es = es[:n]
	}
	for _, e := range es {
		out = append(out, e.p)
	}
	return out
}

// gap is a PUSH whose sequence number is beyond the next one of its
// stream: the messages between were not delivered.
type gap struct {
	stream, epoch string
	after, seq    uint64
}

// ErrGap ends a session in which a stream the Client follows skipped
// sequence numbers: the Client reconnects, and resumes the stream from its
// position, so that the server sends what was skipped, in order.
var ErrGap = errors.New("herald: gap in a stream")

// checkGap returns ErrGap when f skips sequence numbers of its stream,
// unless the last session ended on the same gap: then the server does not
// have what is missing any more (expired, trimmed), and the stream goes on
// from f.
func (c *Client) checkGap(f *protocol.Frame) error {
	if f.Seq == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pos[f.Stream]
	if p == nil || p.epoch != f.Epoch || f.Seq <= p.seq+1 {
		return nil
	}
	g := gap{stream: f.Stream, epoch: f.Epoch, after: p.seq, seq: f.Seq}
	if g == c.lastGap {
		c.log.Warn("herald: messages skipped for good", "stream", f.Stream, "after", p.seq, "next", f.Seq)
		return nil
	}
	c.lastGap = g
	return fmt.Errorf("%w: %s after seq %d got %d; reconnecting to recover", ErrGap, f.Stream, p.seq, f.Seq)
}

// seen reports whether a PUSH was already delivered: same epoch, sequence
// not after the last one delivered.
func (c *Client) seen(f *protocol.Frame) bool {
	if f.Seq == 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pos[f.Stream]
	return p != nil && p.epoch == f.Epoch && f.Seq <= p.seq
}

// position applies a REPLY that tells where a stream stands on the server
// (a subscription's start, or the end of a recovery): within one epoch the
// position only moves forward; in another epoch it starts again there.
func (c *Client) position(f *protocol.Frame) { c.setPos(f, false) }

// track records a delivered PUSH's position.
func (c *Client) track(f *protocol.Frame) {
	if f.Seq != 0 {
		c.setPos(f, true)
	}
}

func (c *Client) setPos(f *protocol.Frame, always bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pos[f.Stream]
	if p == nil {
		p = &streamPos{}
		c.pos[f.Stream] = p
	}
	if !always && p.epoch == f.Epoch && p.seq >= f.Seq {
		return
	}
	c.posTick++
	p.epoch, p.seq, p.tick = f.Epoch, f.Seq, c.posTick
}

// run owns the connection after Connect: it reads s until it ends, then
// reconnects, until the Client stops.
func (c *Client) run(s *session) {
	defer c.wg.Done()
	attempt := 0
	for {
		start := time.Now()
		cause := c.serve(s)
		if c.ctx.Err() != nil || c.terminal(cause) {
			c.finish(cause)
			return
		}
		c.log.Info("herald: disconnected", "url", redact(s.url), "cause", cause)
		c.setState(StateDisconnected, cause)
		if time.Since(start) >= c.cfg.MaxBackoff {
			attempt = 0 // the connection was healthy: start over
		}
		var alt string
		if d := (protocol.Disconnect{}); errors.As(cause, &d) && d.Alt != "" {
			alt = resolveAlt(s.url, d.Alt)
		}
		for s = nil; s == nil; attempt++ {
			if !sleep(c.ctx, c.backoff(attempt)) {
				c.finish(ErrClosed)
				return
			}
			c.setState(StateConnecting, nil)
			ns, err := c.dial(c.ctx, alt)
			alt = ""
			switch {
			case c.ctx.Err() != nil:
				if ns != nil {
					c.hangUp(ns)
				}
				c.finish(ErrClosed)
				return
			case err == nil && !c.install(ns):
				c.hangUp(ns)
				c.finish(ErrClosed)
				return
			case err == nil:
				s = ns
				c.startSession(s)
			case c.terminal(err):
				c.finish(err)
				return
			default:
				c.log.Info("herald: reconnect failed", "err", err)
				c.setState(StateDisconnected, err)
			}
		}
	}
}

// resolveAlt turns the Alt of a DISCONNECT into a URL: a full URL is used as
// it is; a bare host:port replaces the host of the current URL.
func resolveAlt(cur, alt string) string {
	if strings.Contains(alt, "://") {
		return alt
	}
	u, err := url.Parse(cur)
	if err != nil {
		return alt
	}
	u.Host = alt
	return u.String()
}
