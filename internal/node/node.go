// Package node is the orchestrator of one Herald process: it authenticates
// clients that the gateway accepts, records their sessions, joins them to
// the streams they follow, and turns API calls into stored messages that
// the hub routes. It depends on the other roles through the small
// interfaces below, and talks to connections through Conn.
//
// The package's files, by what they own:
//
//	node.go     the Node, its configuration and roles
//	session.go  a connection's life: CONNECT, duplicate login, frames, close
//	inbox.go    user inboxes: durable pushes, catch-up, ACK, status
//	topics.go   topic and broadcast history: publish, subscribe, recovery
//	fill.go     reading a stream's gap from the store, for the hub
//	readers.go  the bounded pool that runs store reads for connections
//	ops.go      the server API's operations
//
// Order comes from positions, not locks: every stored message has a
// position (epoch, seq) in its stream, the hub routes each stream in
// sequence order and fills gaps from the store, and a connection joins a
// stream at the position it read the store up to (see hub's "Ordered
// delivery").
package node

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/appstats"
	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/switches"
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

// Conn is what the node needs of a client connection. *gateway.Conn has
// it; tests use fakes.
type Conn interface {
	hub.Conn // ID, Send
	SendFrame(f *protocol.Frame) error
	// Close sends a DISCONNECT with d and closes; the first reason wins.
	Close(d protocol.Disconnect)
	// Fail sends an ERROR and, if its code is fatal, closes with d.
	Fail(e *protocol.Error, d protocol.Disconnect)
	// Authenticate marks the connection authenticated; false if it is
	// closing already.
	Authenticate() bool
	Closed() bool
	// Session and SetSession keep the node's data on the connection.
	Session() any
	SetSession(v any)
	RemoteAddr() string
	Opened() time.Time
	TransportName() string
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
	Readers          int           // goroutines running store reads for connections (catch-ups, recoveries); default 32
	// MaxAppConnections bounds the authenticated connections of each app
	// on this node, by app id; an app absent or at 0 is unlimited. A
	// CONNECT over it gets ERROR CodeAppConnectionLimit and DISCONNECT
	// DisconnectAppConnectionLimit.
	MaxAppConnections map[string]int
	// RemoteRegistry says that the registry is a network round trip away
	// (a cluster's): claims then run on the readers, not the event loop.
	RemoteRegistry bool
	// Broker carries messages and control to the other nodes of a
	// cluster; nil for a node alone.
	Broker Broker
	// Limits bound the frames other nodes send through the broker;
	// default protocol.DefaultLimits().
	Limits protocol.Limits
	// Switches are the degrade switches the node obeys; nil: a set with
	// every switch off.
	Switches *switches.Set
	// Stats, if set, counts accepted messages per app and stamps their
	// PUSH frames for the delivery-latency histogram (package appstats).
	Stats  *appstats.Recorder
	Logger *slog.Logger
	Now    func() time.Time
}

// Node implements gateway.Handler and the operations of the server API.
type Node struct {
	cfg      Config
	log      *slog.Logger
	verifier Verifier
	hub      *hub.Hub
	reg      Registry
	store    store.Store
	readers  *readers
	trims    chan string
	replays  replayCache
	broker   Broker
	limits   protocol.Limits
	interest interest
	clusterCounters

	idPrefix string
	msgSeq   atomic.Uint64

	redeliver redelivery

	// tun are the per-connection limits that SetTunables replaces.
	tun atomic.Pointer[Tunables]
	// appConns counts the connections of apps with a connection limit;
	// read-only after New (a reload cannot change these limits).
	appConns        map[string]*appCount
	appLimitRefused atomic.Uint64
	appOpen         sync.Map // app id -> *appCount, apps without a limit
	deg             degrade

	acks, uplinks, caughtUp, undeliverable, recovered, unrecovered atomic.Uint64
}

var _ gateway.Handler = (*Node)(nil)

// New returns a node. Call Close to stop its readers.
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
	if cfg.Readers <= 0 {
		cfg.Readers = 32
	}
	if cfg.Limits == (protocol.Limits{}) {
		cfg.Limits = protocol.DefaultLimits()
	}
	appConns := make(map[string]*appCount)
	for app, m := range cfg.MaxAppConnections {
		if m > 0 {
			appConns[app] = &appCount{max: int64(m)}
		}
	}
	n := &Node{
		appConns:  appConns,
		cfg:       cfg,
		log:       cfg.Logger,
		verifier:  v,
		hub:       h,
		reg:       r,
		store:     st,
		readers:   newReaders(cfg.Readers),
		broker:    cfg.Broker,
		limits:    cfg.Limits,
		interest:  interest{subs: make(map[hub.Stream]*want)},
		trims:     make(chan string, 256),
		redeliver: redelivery{m: make(map[string]redeliveryEntry)},
		idPrefix:  strconv.FormatInt(cfg.Now().UnixNano(), 36) + "-",
	}
	if cfg.Switches == nil {
		n.cfg.Switches = switches.New(cfg.Now)
	}
	n.deg = degrade{sw: n.cfg.Switches, historyBack: map[string]time.Time{}}
	n.deg.sw.Watch(n.watchSwitches)
	n.SetTunables(Tunables{MaxSubscriptions: cfg.MaxSubscriptions, ReplayRate: cfg.ReplayRate, ReplayBurst: cfg.ReplayBurst})
	return n
}

// Tunables are the per-connection limits a running node can change
// (SetTunables); zero fields take the defaults of New.
type Tunables struct {
	MaxSubscriptions int // subscriptions per connection
	ReplayRate       int // bytes of history replayed per second per connection
	ReplayBurst      int // bytes replayed at once; raised to the replay budget
}

// SetTunables replaces the per-connection limits, for open connections
// too: a connection over a lowered MaxSubscriptions keeps its
// subscriptions but cannot add any. It is safe to call while the node runs.
func (n *Node) SetTunables(t Tunables) {
	if t.MaxSubscriptions <= 0 {
		t.MaxSubscriptions = 128
	}
	if t.ReplayRate <= 0 {
		t.ReplayRate = 256 << 10
	}
	if t.ReplayBurst <= 0 {
		t.ReplayBurst = 4 << 20
	}
	t.ReplayBurst = max(t.ReplayBurst, n.cfg.ReplayBudget)
	n.tun.Store(&t)
}

// Start subscribes the node to its control messages (in a cluster).
func (n *Node) Start(ctx context.Context) error { return n.listenControl(ctx) }

// Wait returns when the store reads under way for connections have
// finished, and stops the readers: call it after the gateway has closed
// every connection.
func (n *Node) Wait() { n.readers.close() }

// errorFrame is an ERROR frame answering request id.
func errorFrame(id uint32, code protocol.ErrorCode, text string) *protocol.Frame {
	return (&protocol.Error{ID: id, Code: code, Text: text}).Frame()
}

// appCountOf returns app's connection count: the limited one built at
// New, or an unlimited one made on first use (apps are the configured
// ones, whose tokens verify: bounded).
func (n *Node) appCountOf(app string) *appCount {
	if ac := n.appConns[app]; ac != nil {
		return ac
	}
	if v, ok := n.appOpen.Load(app); ok {
		return v.(*appCount)
	}
	v, _ := n.appOpen.LoadOrStore(app, &appCount{})
	return v.(*appCount)
}

// AppConnections returns the authenticated connections of each app on
// this node (apps that had none since the start are absent).
func (n *Node) AppConnections() map[string]int64 {
	out := make(map[string]int64, len(n.appConns))
	for app, ac := range n.appConns {
		out[app] = ac.n.Load()
	}
	n.appOpen.Range(func(k, v any) bool {
		out[k.(string)] = v.(*appCount).n.Load()
		return true
	})
	return out
}

// appCount is the number of an app's connections on this node, and its
// bound (0: none).
type appCount struct {
	n       atomic.Int64
	max     int64
	lastLog atomic.Int64 // unix ms of the last "at its limit" log line
}
