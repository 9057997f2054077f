// Package node is the orchestrator of one Herald process: it authenticates
// clients that the gateway accepts, records their sessions, indexes them in
// the hub, and turns API calls into frames for the hub to route. It depends
// on the other roles through the small interfaces below.
package node

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/protocol"
)

// Verifier checks client tokens.
type Verifier interface {
	Verify(token string) (auth.Claims, error)
}

// Registry records online sessions (registry.Registry is one).
type Registry interface {
	Claim(ctx context.Context, s *registry.Session, replace bool) (prev registry.Session, hadPrev bool, err error)
	Release(ctx context.Context, s *registry.Session) error
	Lookup(ctx context.Context, app, user string) ([]registry.Session, error)
	Count() int
}

// Duplicate login policies.
const (
	DuplicateReplace = "replace" // the newer connection wins; the older is told "replaced"
	DuplicateRefuse  = "refuse"  // the older connection stays; the newer is refused
)

// Config configures a Node.
type Config struct {
	ID               string        // node id, shown to clients and in presence
	Heartbeat        time.Duration // interval announced in CONNECTED
	DuplicateLogin   string        // DuplicateReplace (default) or DuplicateRefuse
	MaxSubscriptions int           // per connection; default 128
	MessageTTL       time.Duration // default lifetime of a stored inbox message; 0 = until removed
	MaxRedeliveries  int           // connections in a row a device may start at the same unacknowledged message before it is skipped as undeliverable; 0 = no limit
	HistorySize      int           // messages kept per topic and broadcast stream for recovery; 0 = live only
	HistoryTTL       time.Duration // age limit of topic and broadcast history; default 1h
	ReplayBudget     int           // bytes one recovery may replay before it reports "cannot recover"; default 256 KiB
	ReplayRate       int           // bytes one connection may replay per second, over all its recoveries; default 256 KiB
	ReplayBurst      int           // bytes one connection may replay at once; default 4 MiB, and never less than ReplayBudget
	Logger           *slog.Logger
	Now              func() time.Time
}

// Node implements gateway.Handler and the operations of the server API.
type Node struct {
	cfg      Config
	log      *slog.Logger
	verifier Verifier
	hub      *hub.Hub
	reg      Registry
	store    store.Store
	users    userLocks  // per user: inbox appends and catch-ups
	streams  *pubShards // per topic and broadcast stream: publishes and recoveries
	trims    chan string
	replays  replayCache
	wg       sync.WaitGroup // catch-ups in flight

	idPrefix string
	msgSeq   atomic.Uint64

	redeliver redelivery

	acks, uplinks, caughtUp, undeliverable, recovered, unrecovered atomic.Uint64
}

var _ gateway.Handler = (*Node)(nil)

// New returns a node.
func New(cfg Config, v Verifier, h *hub.Hub, r Registry, st store.Store) *Node {
	if cfg.DuplicateLogin == "" {
		cfg.DuplicateLogin = DuplicateReplace
	}
	if cfg.MaxSubscriptions <= 0 {
		cfg.MaxSubscriptions = 128
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HistoryTTL <= 0 {
		cfg.HistoryTTL = time.Hour
	}
	if cfg.ReplayBudget <= 0 {
		cfg.ReplayBudget = 256 << 10
	}
	if cfg.ReplayRate <= 0 {
		cfg.ReplayRate = 256 << 10
	}
	if cfg.ReplayBurst <= 0 {
		cfg.ReplayBurst = 4 << 20
	}
	cfg.ReplayBurst = max(cfg.ReplayBurst, cfg.ReplayBudget)
	return &Node{
		cfg:       cfg,
		log:       cfg.Logger,
		verifier:  v,
		hub:       h,
		reg:       r,
		store:     st,
		users:     userLocks{seed: maphash.MakeSeed()},
		streams:   &pubShards{seed: maphash.MakeSeed()},
		trims:     make(chan string, 256),
		redeliver: redelivery{m: make(map[string]redeliveryEntry)},
		idPrefix:  strconv.FormatInt(cfg.Now().UnixNano(), 36) + "-",
	}
}

// session is what the node keeps per authenticated connection.
type session struct {
	reg      registry.Session // the registry holds a pointer to it
	allowed  []string         // topic patterns the token allows
	named    bool             // the client gave a device id: it has an inbox position
	backlog  uint64           // guarded by mu: last seq of an unfinished catch-up round; 0 when caught up
	resumeAt uint64           // guarded by mu: an ACK of this seq starts the next round

	mu       sync.Mutex
	topics   []string // subscribed topics
	released bool     // removed from hub and registry; no more subscriptions
	busy     bool     // a goroutine is running the subscription operations (serialize)
	ops      []func() // subscription operations waiting behind it; at most maxQueuedOps
	replayed int64    // the replay budget's theoretical arrival time, unix nanoseconds (see replayAllowance)
}

// OnFrame implements gateway.Handler.
func (n *Node) OnFrame(c *gateway.Conn, f *protocol.Frame) {
	switch f.Type {
	case protocol.TypeConnect:
		n.connect(c, f)
		return
	}
	s, _ := c.Session().(*session)
	if s == nil {
		return
	}
	switch f.Type {
	case protocol.TypeSubscribe:
		n.subscribe(c, s, f)
	case protocol.TypeUnsubscribe:
		n.unsubscribe(c, s, f)
	case protocol.TypeAck:
		n.acks.Add(1)
		n.ack(c, s, f)
	case protocol.TypeUplink:
		n.uplinks.Add(1)
		_ = c.SendFrame((&protocol.Error{ID: f.ID, Code: protocol.CodeNotSupported, Text: "uplink is not supported by this server"}).Frame())
	case protocol.TypeDisconnect:
		c.Close(protocol.NewDisconnect(protocol.DisconnectNormal))
	default:
		_ = c.SendFrame((&protocol.Error{ID: f.ID, Code: protocol.CodeBadRequest, Text: fmt.Sprintf("a client may not send %s", f.Type)}).Frame())
	}
}

// OnClose implements gateway.Handler.
func (n *Node) OnClose(c *gateway.Conn, reason protocol.Disconnect) {
	if s, ok := c.Session().(*session); ok {
		n.release(c, s)
	}
}

func (n *Node) release(c *gateway.Conn, s *session) {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		return
	}
	s.released = true
	topics := s.topics
	s.topics = nil
	s.mu.Unlock()
	for _, t := range topics {
		n.hub.Unsubscribe(s.reg.App, t, c)
	}
	n.hub.LeaveApp(s.reg.App, c)
	n.hub.RemoveUser(s.reg.App, s.reg.User, c)
	if err := n.reg.Release(context.Background(), &s.reg); err != nil {
		n.log.Warn("registry release failed; the registry retries it", "conn_id", c.ID(), "user", s.reg.User, "err", err)
	}
}

func (n *Node) connect(c *gateway.Conn, f *protocol.Frame) {
	if c.Authenticated() {
		_ = c.SendFrame((&protocol.Error{Code: protocol.CodeBadRequest, Text: "already connected"}).Frame())
		return
	}
	if f.Version > protocol.Version {
		c.Fail(&protocol.Error{Code: protocol.CodeUnsupportedVersion, Text: fmt.Sprintf("protocol version %d; this server speaks %d", f.Version, protocol.Version)},
			protocol.NewDisconnect(protocol.DisconnectProtocolError))
		return
	}
	claims, err := n.verifier.Verify(f.Token)
	if err != nil {
		code := protocol.CodeBadToken
		if errors.Is(err, auth.ErrExpired) {
			code = protocol.CodeTokenExpired
		}
		n.log.Info("connect refused", "conn_id", c.ID(), "remote", c.RemoteAddr(), "err", err)
		c.Fail(&protocol.Error{Code: code, Text: err.Error()}, protocol.NewDisconnect(protocol.DisconnectAuthFailed))
		return
	}
	device := f.Device
	if device == "" {
		device = "conn-" + strconv.FormatUint(c.ID(), 10) // anonymous device: never a duplicate
	} else if !auth.ValidName(device) {
		_ = c.SendFrame((&protocol.Error{Code: protocol.CodeBadName, Text: "device id must be 1-128 printable bytes without spaces"}).Frame())
		c.Close(protocol.NewDisconnect(protocol.DisconnectProtocolError))
		return
	}
	s := &session{
		named:   f.Device != "",
		allowed: claims.Topics,
		reg: registry.Session{
			App: claims.App, User: claims.User, Device: device, Node: n.cfg.ID,
			ConnID: c.ID(), Since: c.Opened(), Transport: c.Transport().String(), Remote: c.RemoteAddr(),
		},
	}
	prev, hadPrev, err := n.reg.Claim(context.Background(), &s.reg, n.cfg.DuplicateLogin != DuplicateRefuse)
	if errors.Is(err, registry.ErrDuplicate) {
		c.Close(protocol.NewDisconnect(protocol.DisconnectDuplicateRefused))
		return
	}
	if err != nil {
		n.log.Warn("connect refused: registry claim failed", "conn_id", c.ID(), "user", s.reg.User, "err", err)
		c.Close(protocol.NewDisconnect(protocol.DisconnectServerError))
		return
	}
	if hadPrev && prev.Node == n.cfg.ID { // a session on another node is closed there
		n.closeConn(prev.App, prev.User, prev.ConnID, protocol.NewDisconnect(protocol.DisconnectReplaced))
	}
	c.SetSession(s)
	if !c.Authenticate() {
		n.release(c, s) // closed while we were authenticating
		return
	}
	// The user's lock is taken here and released when the catch-up is
	// done: pushes to the user wait, so the device sees CONNECTED, then what
	// it missed, then live messages, with nothing between or out of order.
	l := n.users.get(s.reg.App, s.reg.User)
	if l.TryLock() {
		n.connected(c, s, f.Resume, l)
		return
	}
	// An append to the user is in flight (it holds the lock across an
	// fsync): wait for it off the event loop. The connection's
	// subscription requests queue behind this, so none is answered before
	// CONNECTED.
	resume := f.Resume
	s.mu.Lock()
	s.busy = true
	s.mu.Unlock()
	n.wg.Add(1)
	go n.runOps(s, func() {
		l.Lock()
		n.connected(c, s, resume, l)
	})
}

// connected finishes a CONNECT holding the user's lock l: it indexes c,
// sends CONNECTED, joins the broadcast stream, and starts the catch-up of
// a named device, which unlocks l when done (otherwise l is unlocked
// here).
func (n *Node) connected(c *gateway.Conn, s *session, resume []protocol.Position, l *sync.Mutex) {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		l.Unlock()
		return
	}
	if !s.named {
		n.hub.AddUser(s.reg.App, s.reg.User, c) // named devices join after their catch-up
	}
	s.mu.Unlock()
	_ = c.SendFrame(&protocol.Frame{
		Type:      protocol.TypeConnected,
		Session:   n.cfg.ID + "-" + strconv.FormatUint(c.ID(), 10),
		Node:      n.cfg.ID,
		Heartbeat: n.cfg.Heartbeat,
		Time:      n.cfg.Now().UnixMilli(),
	})
	n.joinBroadcast(c, s, resume) // after CONNECTED: nothing may precede it
	if !s.named {
		l.Unlock() // no inbox position: live messages only
		if c.Closed() {
			n.release(c, s)
		}
		return
	}
	// The catch-up reads the store: off the event loop. It unlocks the
	// user's lock when done.
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := n.catchUp(ctx, c, s, 0)
		l.Unlock()
		if err != nil {
			n.log.Warn("catch-up failed", "conn_id", c.ID(), "user", s.reg.User, "err", err)
			c.Close(protocol.NewDisconnect(protocol.DisconnectServerError))
		}
		if c.Closed() {
			n.release(c, s) // the gateway may have skipped OnClose before SetSession
		}
	}()
}

// Wait returns when the catch-ups in flight have finished.
func (n *Node) Wait() { n.wg.Wait() }

// closeConn closes the local connection id of a user, if it is here and
// not closing already (a connection stays indexed until its close
// completes), and reports whether it did.
func (n *Node) closeConn(app, user string, id uint64, d protocol.Disconnect) bool {
	for _, hc := range n.hub.UserConns(app, user) {
		if hc.ID() == id {
			if gc, ok := hc.(*gateway.Conn); ok && !gc.Closed() {
				gc.Close(d)
				return true
			}
		}
	}
	return false
}
