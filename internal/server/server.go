// Package server wires the roles of one Herald process together: gateway,
// hub, registry, node, API and metrics. It is the only place that chooses
// concrete implementations; cmd/herald and the end-to-end tests use it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/herald-push/herald/internal/admin"
	"github.com/herald-push/herald/internal/api"
	"github.com/herald-push/herald/internal/appstats"
	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/broker"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/metrics"
	"github.com/herald-push/herald/internal/node"
	"github.com/herald-push/herald/internal/origin"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/embedded"
	"github.com/herald-push/herald/internal/store/redisstore"
	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/protocol"
)

// apiMaxHeaderBytes bounds the request line and headers of a server API
// request (net/http allows 4096 bytes more); a request over it gets 431.
const apiMaxHeaderBytes = 16 << 10

// Options are what the process supplies besides the configuration.
type Options struct {
	Logger      *slog.Logger
	LogsDropped func() uint64
	Now         func() time.Time
	// StoreFS is the file system of the embedded store; nil means the
	// operating system's. Tests inject disk faults through it.
	StoreFS vfs.FS
	// StoreRetry is how often a failed embedded store tries to reopen; 0
	// means the store's default.
	StoreRetry time.Duration
	// Version is the build's version, shown by the admin API.
	Version string
	// LoadConfig, if set, reads the configuration again (from where the
	// process read it at start) for a reload through the admin API.
	LoadConfig func() (config.Config, error)
	// LogLevel, if set, is the level of Logger, which Reload changes when
	// log.level does; without it Reload refuses a change of log.level.
	LogLevel *slog.LevelVar
}

// Server is one running Herald process.
type Server struct {
	cfg     config.Config
	log     *slog.Logger
	gw      *gateway.Gateway
	hub     *hub.Hub
	node    *node.Node
	apiSrv  *http.Server
	apiLn   net.Listener
	metrics *metrics.Metrics
	apiDone chan error
	store   store.Store
	reg     registry.Registry
	broker  broker.Broker // nil on a single node
	// apps counts per app and holds the delivery-latency histogram.
	apps *appstats.Recorder

	expiryStop context.CancelFunc
	expiryDone chan struct{}

	pprofSrv *http.Server

	// What Reload replaces, and the configuration in force (cfg keeps the
	// one the server started with; the settings Reload may not change are
	// the same in both).
	verifier *auth.Verifier
	keys     *auth.Keys
	api      *api.API
	logLevel *slog.LevelVar
	reloadMu sync.Mutex
	cur      config.Config

	// Degrade switches and drain.
	switches    *switches.Set
	switchStore switches.Store
	switchMu    sync.Mutex // serialises FlipSwitch's saves
	refuseMu    sync.Mutex // serialises applyRefusal
	draining    atomic.Bool
	drainGen    atomic.Uint64 // one more for each drain started
	drainStop   chan struct{}

	admin        *admin.Handler
	clusterNodes atomic.Value // int: live nodes, as the last cluster view found
	latMu        sync.Mutex
	prevLat      metrics.LatencySnapshot // at the last admin sample
	version      string
	started      time.Time
	loadConfig   func() (config.Config, error)

	stopOnce sync.Once
	stopErr  error
}

// New builds a server from a validated configuration.
func New(cfg config.Config, opt Options) (*Server, error) {
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	log := opt.Logger
	wsOrigins, err := origin.Parse(cfg.WS.AllowedOrigins)
	if err != nil {
		return nil, fmt.Errorf("ws.allowed_origins: %w", err)
	}
	corsOrigins, err := origin.Parse(cfg.API.CORSOrigins)
	if err != nil {
		return nil, fmt.Errorf("api.cors_origins: %w", err)
	}
	var cors *origin.List
	if len(cfg.API.CORSOrigins) > 0 {
		cors = &corsOrigins
	}
	prot, err := protection(cfg.Protection)
	if err != nil {
		return nil, err
	}
	if len(cfg.WS.AllowedOrigins) == 0 {
		log.Info("ws.allowed_origins is empty: browsers from any origin may connect; set it in production")
	}
	st, err := openStore(cfg, opt, log)
	if err != nil {
		return nil, err
	}
	// The hub and the registry call the node, which is built after them.
	var (
		n  *node.Node
		gw *gateway.Gateway
	)
	h := hub.New(hub.Config{Workers: cfg.FanoutWorkers, Logger: log, Filler: fillFunc(func(ctx context.Context, s hub.Stream, after, before uint64) (string, []hub.Ordered, error) {
		return n.Fill(ctx, s, after, before)
	})})
	// The registry's goroutine reads the gateway while New builds it.
	var gwRef atomic.Pointer[gateway.Gateway]
	var adminRef atomic.Pointer[admin.Handler] // the registry reports the admin sampler's rates
	reg, err := openRegistry(cfg, opt, log, &gwRef, &adminRef, &n)
	if err != nil {
		_ = h.Shutdown(context.Background())
		_ = st.Close()
		return nil, err
	}
	brk, err := openBroker(cfg, log, &n)
	if err != nil {
		_ = h.Shutdown(context.Background())
		_ = reg.Close()
		_ = st.Close()
		return nil, err
	}
	appIDs := make([]string, 0, len(cfg.Apps))
	for _, a := range cfg.Apps {
		appIDs = append(appIDs, a.ID)
	}
	rec := appstats.New(appIDs)
	// undo closes what New opened so far, when a later step fails.
	undo := func() {
		_ = h.Shutdown(context.Background())
		_ = reg.Close()
		_ = st.Close()
		if brk != nil {
			_ = brk.Close()
		}
	}
	sw, swStore, err := openSwitches(cfg, opt)
	if err != nil {
		undo()
		return nil, err
	}
	lim := protocol.DefaultLimits()
	lim.MaxFrame = cfg.MaxFrameSize
	lim.MaxPayload = cfg.MaxPayload
	lim.MaxConnect = cfg.MaxConnectSize
	verifier := auth.NewRotatingVerifier(cfg.AppSecretSets(), opt.Now)
	n = node.New(node.Config{
		ID:                cfg.Node,
		Heartbeat:         cfg.Heartbeat,
		DuplicateLogin:    cfg.DuplicateLogin,
		MaxSubscriptions:  cfg.MaxSubscriptions,
		MessageTTL:        cfg.MessageTTL,
		MaxRedeliveries:   cfg.MaxRedeliveries,
		HistorySize:       cfg.HistorySize,
		HistoryTTL:        cfg.HistoryTTL,
		ReplayBudget:      cfg.OutboundLimit / 4,
		ReplayRate:        cfg.ReplayRate,
		ReplayBurst:       cfg.ReplayBurst,
		RemoteRegistry:    cfg.Cluster.Enabled(),
		MaxAppConnections: appMaxConnections(cfg.Apps),
		Limits:            lim,
		Broker:            brk,
		Switches:          sw,
		Stats:             rec,
		Logger:            log,
		Now:               opt.Now,
	}, verifier, h, reg, st)

	gw, err = gateway.New(gateway.Config{
		WSAddr:         cfg.WS.Addr,
		WSPath:         cfg.WS.Path,
		WSTLS:          gateway.TLS{CertFile: cfg.WS.TLSCert, KeyFile: cfg.WS.TLSKey},
		AllowedOrigins: wsOrigins,
		TCPAddr:        cfg.TCP.Addr,
		TCPTLS:         gateway.TLS{CertFile: cfg.TCP.TLSCert, KeyFile: cfg.TCP.TLSKey},
		Limits:         lim,
		OutboundLimit:  cfg.OutboundLimit,
		FrameRate:      gateway.Rate{PerSecond: cfg.FrameRate, Burst: cfg.FrameBurst},
		SubscribeRate:  gateway.Rate{PerSecond: cfg.SubscribeRate, Burst: cfg.SubscribeBurst},
		Heartbeat:      cfg.Heartbeat,
		Grace:          cfg.HeartbeatGrace,
		AuthTimeout:    cfg.AuthTimeout,
		Protection:     prot,
		Latency:        rec,
		Logger:         log,
		Now:            opt.Now,
	}, n)
	if err != nil {
		undo()
		closeSwitchStore(swStore)
		return nil, err
	}

	gwRef.Store(gw)

	var s *Server
	src := metrics.Sources{
		Gateway:     gw.Stats,
		Hub:         h.Stats,
		Node:        n.Stats,
		Store:       func() metrics.StoreStats { return storeStats(st) },
		LogsDropped: opt.LogsDropped,
		APIRateLimited: func() map[string]metrics.RateLimited {
			out := make(map[string]metrics.RateLimited)
			for app, r := range s.api.RateLimited() {
				out[app] = metrics.RateLimited{API: r.API, Publish: r.Publish}
			}
			return out
		},
		Apps: rec.Snapshot,
	}
	if brk != nil {
		src.Cluster = func() metrics.ClusterStats { return s.clusterStats() }
	}
	src.Switches = func() metrics.SwitchStats { return s.switchStats() }
	m := metrics.New(src)
	apps := make([]string, 0, len(cfg.Apps))
	for _, a := range cfg.Apps {
		apps = append(apps, a.ID)
	}
	s = &Server{cfg: cfg, log: log, gw: gw, hub: h, node: n, store: st, reg: reg, broker: brk, apps: rec, metrics: m, apiDone: make(chan error, 1),
		verifier: verifier, keys: auth.NewKeys(cfg.APIKeys()), logLevel: opt.LogLevel, cur: cfg, switches: sw, switchStore: swStore,
		drainStop: make(chan struct{}), version: opt.Version, started: opt.Now(), loadConfig: opt.LoadConfig}
	sw.Watch(s.watchSwitches)
	s.applyRefusal()
	for _, st := range sw.InForce() {
		log.Warn("degrade switch on at start", "switch", st.Name, "app", st.App, "source", st.Source)
	}
	s.admin = admin.New(adminBackend{s}, log)
	adminRef.Store(s.admin)
	handler := api.New(api.Config{
		Prefix:        strings.TrimSuffix(cfg.API.Path, "/"),
		Apps:          appIDs,
		Limits:        apiLimits(cfg.Apps),
		MaxPayload:    cfg.MaxPayload,
		MaxRecipients: cfg.MaxRecipients,
		BodyTimeout:   cfg.APIBodyTimeout,
		CORS:          cors,
		Stats:         s.Stats,
		Health:        s.healthz,
		Cluster:       s.cluster,
		Observe:       m.ObserveAPI,
		ObserveApp:    rec.API,
		Extra:         map[string]http.Handler{"GET /metrics": m.Handler(), "/admin/": s.admin, "/admin": s.admin},
		Logger:        log,
	}, n, s.keys)
	s.api = handler
	s.apiSrv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    apiMaxHeaderBytes,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Start opens every listener. On error nothing is left running.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.cfg.API.Addr)
	if err != nil {
		_ = s.hub.Shutdown(context.Background())
		_ = s.store.Close()
		_ = s.reg.Close()
		s.closeBroker()
		return fmt.Errorf("api listener %s: %w", s.cfg.API.Addr, err)
	}
	if err := s.gw.Start(); err != nil {
		_ = ln.Close()
		_ = s.hub.Shutdown(context.Background())
		_ = s.store.Close()
		_ = s.reg.Close()
		s.closeBroker()
		return err
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = s.node.Start(cctx) // control messages from other nodes
	if err == nil {
		err = s.listenSwitches(cctx)
	}
	ccancel()
	if err != nil {
		_ = ln.Close()
		_ = s.gw.Shutdown(context.Background(), "")
		_ = s.hub.Shutdown(context.Background())
		_ = s.store.Close()
		_ = s.reg.Close()
		s.closeBroker()
		return fmt.Errorf("control subject: %w", err)
	}
	ectx, cancel := context.WithCancel(context.Background())
	s.expiryStop, s.expiryDone = cancel, make(chan struct{})
	go func() {
		defer close(s.expiryDone)
		s.node.RunExpiry(ectx, time.Minute)
	}()
	s.apiLn = ln
	ln = api.JSONErrors(ln) // the answers net/http writes itself are JSON too
	if s.cfg.PprofAddr != "" {
		if err := s.startPprof(); err != nil {
			_ = ln.Close()
			_ = s.gw.Shutdown(context.Background(), "")
			_ = s.hub.Shutdown(context.Background())
			return err
		}
	}
	go func() {
		var err error
		if s.cfg.API.TLSCert != "" && s.cfg.API.TLSKey != "" {
			err = s.apiSrv.ServeTLS(ln, s.cfg.API.TLSCert, s.cfg.API.TLSKey)
		} else {
			err = s.apiSrv.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.apiDone <- err
	}()
	s.admin.Start()
	s.log.Info("herald started", "node", s.cfg.Node, "ws", addrString(s.gw.WSAddr()), "ws_path", s.cfg.WS.Path,
		"tcp", addrString(s.gw.TCPAddr()), "api", ln.Addr().String())
	return nil
}

// WSURL returns the WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws.
func (s *Server) WSURL() string {
	return wsURL(s.gw.WSAddr(), s.cfg.WS.Path, s.cfg.WS.TLSCert != "")
}

// wsURL is the WebSocket URL of a listener at addr.
func wsURL(addr net.Addr, path string, tls bool) string {
	if addr == nil {
		return ""
	}
	scheme := "ws"
	if tls {
		scheme = "wss"
	}
	return scheme + "://" + addr.String() + path
}

// TCPAddr returns the raw TCP listener's address, or "".
func (s *Server) TCPAddr() string { return addrString(s.gw.TCPAddr()) }

// APIURL returns the base URL of the server API.
func (s *Server) APIURL() string {
	scheme := "http"
	if s.cfg.API.TLSCert != "" {
		scheme = "https"
	}
	return scheme + "://" + s.apiLn.Addr().String()
}

// Node returns the node, for tests that call it directly.
func (s *Server) Node() *node.Node { return s.node }

// Stats are the server's counters, as GET /v1/stats returns them.
type Stats struct {
	Node    string        `json:"node"`
	Gateway gatewayStats  `json:"connections"`
	Hub     hub.Stats     `json:"routing"`
	Session node.Stats    `json:"sessions"`
	Store   storeState    `json:"store"`
	Cluster *clusterState `json:"cluster,omitempty"` // on a node of a cluster
}

// clusterState is the cluster's part of Stats: the broker and the
// registry as this node sees them.
type clusterState struct {
	BrokerHealthy   bool         `json:"broker_healthy"`
	BrokerError     string       `json:"broker_error,omitempty"`
	RegistryHealthy bool         `json:"registry_healthy"`
	RegistryError   string       `json:"registry_error,omitempty"`
	Broker          broker.Stats `json:"broker"`
}

// storeState is the store's part of Stats.
type storeState struct {
	Healthy bool   `json:"healthy"`
	Error   string `json:"error,omitempty"`
	Epoch   string `json:"epoch,omitempty"`
	metrics.StoreStats
}

type gatewayStats struct {
	Open         int64  `json:"open"`
	Accepted     uint64 `json:"accepted"`
	FramesIn     uint64 `json:"frames_in"`
	FramesOut    uint64 `json:"frames_out"`
	BytesOut     uint64 `json:"bytes_out"`
	Writes       uint64 `json:"writes"`
	DecodeErrors uint64 `json:"decode_errors"`
	// OriginRefused counts WebSocket and SSE requests refused for their
	// Origin (ws.allowed_origins).
	OriginRefused uint64 `json:"origin_refused"`
	// Refused counts connections refused by protection and app limits,
	// by reason.
	Refused     map[string]uint64 `json:"refused"`
	Disconnects map[string]uint64 `json:"disconnects"`
}

// Stats returns a snapshot of every counter.
func (s *Server) Stats() any {
	g := s.gw.Stats()
	gs := gatewayStats{Open: g.Open, Accepted: g.Accepted, FramesIn: g.FramesIn, FramesOut: g.FramesOut,
		BytesOut: g.BytesOut, Writes: g.Writes, DecodeErrors: g.DecodeErrors, OriginRefused: g.OriginRefused, Disconnects: map[string]uint64{}}
	for code, v := range g.Disconnects {
		gs.Disconnects[code.String()] = v
	}
	gs.Refused = g.Refused
	gs.Refused[gateway.RefusedAppLimit] = s.node.Stats().AppLimitRefused
	st := storeState{Healthy: true, StoreStats: storeStats(s.store)}
	if e, ok := s.store.(interface{ Epoch() string }); ok {
		st.Epoch = e.Epoch() // one for every stream of a memory or embedded store
	}
	if err := s.store.Health(); err != nil {
		st.Healthy, st.Error = false, err.Error()
	}
	out := Stats{Node: s.cfg.Node, Gateway: gs, Hub: s.hub.Stats(), Session: s.node.Stats(), Store: st}
	if s.broker != nil {
		c := &clusterState{BrokerHealthy: true, RegistryHealthy: true, Broker: s.broker.Stats()}
		if err := s.broker.Health(); err != nil {
			c.BrokerHealthy, c.BrokerError = false, err.Error()
		}
		if err := s.reg.Health(); err != nil {
			c.RegistryHealthy, c.RegistryError = false, err.Error()
		}
		out.Cluster = c
	}
	return out
}

// DeliveryLatency returns the delivery-latency histogram's cumulative
// counts, all apps and by app label (see herald_delivery_latency_seconds
// in docs/operations.md).
func (s *Server) DeliveryLatency() metrics.LatencySnapshot {
	return metrics.Latency(s.apps.Snapshot())
}

// AppCounters returns each app label's cumulative counters: the apps
// configured now (up to appstats.MaxApps of them) and, once it counted
// anything, appstats.Other.
func (s *Server) AppCounters() map[string]metrics.AppCounters {
	return metrics.Counters(s.apps.Snapshot())
}

// GatewayStats returns the gateway's counters.
func (s *Server) GatewayStats() gateway.Stats { return s.gw.Stats() }

// Shutdown drains: clients are told to reconnect (to alt, if set), the API
// stops accepting requests and finishes those under way, and the workers
// stop. It returns the first error, after trying every step.
// Calling it again returns the first call's result.
func (s *Server) Shutdown(ctx context.Context, alt string) error {
	s.stopOnce.Do(func() {
		close(s.drainStop)
		s.admin.Close() // ends the dashboards' streams, so that the API can stop
		errGW := s.gw.Shutdown(ctx, alt)
		errAPI := s.apiSrv.Shutdown(ctx)
		if errAPI == nil {
			errAPI = <-s.apiDone
		}
		errHub := s.hub.Shutdown(ctx)
		s.node.Wait()
		if s.expiryStop != nil {
			s.expiryStop()
			<-s.expiryDone
		}
		errStore := s.store.Close()
		errReg := s.reg.Close()
		s.closeBroker()
		if s.pprofSrv != nil {
			_ = s.pprofSrv.Close()
		}
		closeSwitchStore(s.switchStore)
		s.stopErr = errors.Join(errGW, errAPI, errHub, errStore, errReg)
	})
	return s.stopErr
}

// closeBroker closes the broker, if any.
func (s *Server) closeBroker() {
	if s.broker != nil {
		_ = s.broker.Close()
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// startPprof serves the Go profiler on its own listener, apart from the API.
func (s *Server) startPprof() error {
	ln, err := net.Listen("tcp", s.cfg.PprofAddr)
	if err != nil {
		return fmt.Errorf("pprof listener %s: %w", s.cfg.PprofAddr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.pprofSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.pprofSrv.Serve(ln) }()
	s.log.Info("pprof listening", "addr", ln.Addr().String())
	return nil
}

// fillFunc adapts a function to hub.Filler.
type fillFunc func(ctx context.Context, s hub.Stream, after, before uint64) (string, []hub.Ordered, error)

func (f fillFunc) Fill(ctx context.Context, s hub.Stream, after, before uint64) (string, []hub.Ordered, error) {
	return f(ctx, s, after, before)
}

// storeStats reads the store's health and, for the embedded store, its
// failure counters.
func storeStats(st store.Store) metrics.StoreStats {
	out := metrics.StoreStats{Healthy: st.Health() == nil}
	if db, ok := st.(*embedded.DB); ok {
		out.LossesDetected, out.Reopens = db.Losses(), db.Reopened()
	}
	return out
}

// openStore opens the message store the configuration names.
func openStore(cfg config.Config, opt Options, log *slog.Logger) (store.Store, error) {
	switch cfg.Store {
	case "memory":
		return store.NewMemory(store.MemoryOptions{Now: opt.Now}), nil
	case "redis":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rs, err := redisstore.Open(ctx, redisstore.Options{Addr: cfg.Cluster.Redis, Prefix: cfg.Cluster.Prefix + ":m:", Now: opt.Now})
		if err != nil {
			return nil, fmt.Errorf("open message store on Redis %s: %w", cfg.Cluster.Redis, err)
		}
		if d := rs.Durability(); !d.Durable {
			log.Warn("the cluster's message store is not durable as configured: "+d.String(), "redis", cfg.Cluster.Redis)
		}
		return rs, nil
	}
	policy := embedded.SyncEvery
	if cfg.StoreSync > 0 {
		policy = embedded.SyncInterval(cfg.StoreSync)
	}
	dir := filepath.Join(cfg.DataDir, "store")
	db, err := embedded.Open(dir, embedded.Options{Now: opt.Now, Sync: policy, Logger: log, FS: opt.StoreFS, RetryInterval: opt.StoreRetry})
	if err != nil {
		if errors.Is(err, embedded.ErrCorrupt) {
			return nil, fmt.Errorf("the message store in %s is damaged and cannot be opened as it is: %w\n"+
				"Run 'herald store salvage' with the same configuration to keep what is readable and start a new epoch (docs/operations.md, \"Damaged storage\")", dir, err)
		}
		return nil, fmt.Errorf("open message store: %w", err)
	}
	return db, nil
}

// protection turns the configured protection into the gateway's.
func protection(p config.Protection) (gateway.Protection, error) {
	allow, err := config.Prefixes(p.AllowIPs)
	if err != nil {
		return gateway.Protection{}, fmt.Errorf("protection.allow_ips%w", err)
	}
	deny, err := config.Prefixes(p.DenyIPs)
	if err != nil {
		return gateway.Protection{}, fmt.Errorf("protection.deny_ips%w", err)
	}
	out := gateway.Protection{
		Allow: allow, Deny: deny,
		FlapConnects: p.Flap.Connects, FlapWindow: p.Flap.Window, FlapBan: p.Flap.Ban,
		MaxConnections: p.MaxConnections, MaxMemory: uint64(max(p.MaxMemory, 0)),
		MaxCPU: float64(p.MaxCPUPercent) / 100, CPUTime: processCPU,
	}
	if p.ConnRatePerIP > 0 {
		out.ConnRate = gateway.Rate{PerSecond: p.ConnRatePerIP, Burst: p.ConnBurstPerIP}
	}
	return out, nil
}

// appMaxConnections returns the apps' connection limits by app id.
func appMaxConnections(apps []config.App) map[string]int {
	out := make(map[string]int)
	for _, a := range apps {
		if a.Limits.MaxConnections > 0 {
			out[a.ID] = a.Limits.MaxConnections
		}
	}
	return out
}

// apiLimits returns the apps' API quotas by app id.
func apiLimits(apps []config.App) map[string]api.Limits {
	out := make(map[string]api.Limits)
	for _, a := range apps {
		l := a.Limits
		out[a.ID] = api.Limits{APIRate: l.APIRate, APIBurst: l.APIBurst, PublishRate: l.PublishRate, PublishBurst: l.PublishBurst}
	}
	return out
}
