// Package config loads and validates the herald server configuration.
//
// Values come from, in increasing order of precedence: Default, a YAML file,
// HERALD_* environment variables and command-line flags:
//
//	cfg, err := config.Load(path, os.LookupEnv)
//	if err != nil { ... }
//	cfg.BindFlags(fs)
//	if err := fs.Parse(args); err != nil { ... }
//	if _, _, err := cfg.EnsureDevApp(); err != nil { ... } // optional
//	if err := cfg.Validate(); err != nil { ... }
package config

import (
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"time"

	"github.com/herald-push/herald/internal/auth"
)

// Accepted values of Config.DuplicateLogin.
const (
	// DuplicateReplace: when a login duplicates an existing connection, the
	// existing connection is closed.
	DuplicateReplace = "replace"
	// DuplicateRefuse: the new login is refused instead.
	DuplicateRefuse = "refuse"
)

// Config is the complete server configuration.
type Config struct {
	Node    string   `yaml:"node"`     // node id; default: host name
	DataDir string   `yaml:"data_dir"` // state directory
	WS      Listener `yaml:"ws"`       // WebSocket listener
	TCP     Listener `yaml:"tcp"`      // raw TCP listener (length-prefixed frames); empty Addr disables it
	API     Listener `yaml:"api"`      // HTTP server API and /metrics
	Apps    []App    `yaml:"apps"`     // apps allowed to use the server

	Heartbeat      time.Duration `yaml:"heartbeat"`       // interval announced to clients
	HeartbeatGrace time.Duration `yaml:"heartbeat_grace"` // a connection silent for Heartbeat+HeartbeatGrace is closed
	AuthTimeout    time.Duration `yaml:"auth_timeout"`    // time allowed between accept and a valid CONNECT
	// APIBodyTimeout bounds the time a server API request has to send its
	// body; a body still coming after it is cut (408) and the connection
	// closed.
	APIBodyTimeout time.Duration `yaml:"api_body_timeout"`

	MaxFrameSize     int    `yaml:"max_frame_size"`    // bytes
	MaxConnectSize   int    `yaml:"max_connect_size"`  // bytes of a frame or WebSocket message before CONNECT is accepted
	MaxPayload       int    `yaml:"max_payload"`       // bytes, less than MaxFrameSize
	OutboundLimit    int    `yaml:"outbound_limit"`    // bytes queued per connection before a slow-consumer disconnect
	MaxSubscriptions int    `yaml:"max_subscriptions"` // per connection
	MaxRecipients    int    `yaml:"max_recipients"`    // users per API call
	DuplicateLogin   string `yaml:"duplicate_login"`   // DuplicateReplace or DuplicateRefuse
	FanoutWorkers    int    `yaml:"fanout_workers"`    // goroutines delivering published messages
	GCPercent        int    `yaml:"gc_percent"`        // Go GC target percentage (GOGC); a GOGC environment variable wins
	PprofAddr        string `yaml:"pprof_addr"`        // if set, serve net/http/pprof here (keep it on loopback)

	Store      string        `yaml:"store"`       // "embedded" (on disk under data_dir, the default) or "memory" (lost on restart)
	StoreSync  time.Duration `yaml:"store_sync"`  // 0: fsync every append before the API answers (default); >0: fsync at most this often (a crash may lose that much)
	MessageTTL time.Duration `yaml:"message_ttl"` // default lifetime of an undelivered inbox message
	// MaxRedeliveries bounds how many connections in a row a device may
	// start at the same unacknowledged message; past it the message is
	// skipped for that device (undeliverable, counted). 0 = no limit.
	MaxRedeliveries int `yaml:"max_redeliveries"`
	// HistorySize is how many recent messages each topic and each app's
	// broadcast stream keep for clients that resubscribe after a drop; 0
	// turns history off (topics and broadcasts are live only).
	HistorySize int `yaml:"history_size"`
	// HistoryTTL is how long a topic or broadcast message stays in that
	// history.
	HistoryTTL time.Duration `yaml:"history_ttl"`

	// Per-connection bounds on what one client can make the server do.
	// Over the frame or subscription rate the client gets ERROR 2006 rate
	// limited and DISCONNECT 3012 policy violation; over the replay rate,
	// a recovery is answered "cannot recover".
	FrameRate      int `yaml:"frame_rate"`      // frames per second, every frame of a batch and WebSocket control frames included
	FrameBurst     int `yaml:"frame_burst"`     // frames at once, above frame_rate
	SubscribeRate  int `yaml:"subscribe_rate"`  // SUBSCRIBE and UNSUBSCRIBE requests per second
	SubscribeBurst int `yaml:"subscribe_burst"` // SUBSCRIBE and UNSUBSCRIBE requests at once; at least max_subscriptions
	ReplayRate     int `yaml:"replay_rate"`     // bytes of topic and broadcast history replayed per second
	ReplayBurst    int `yaml:"replay_burst"`    // bytes replayed at once (one recovery of up to outbound_limit/4 is always allowed when the bucket is full)

	// Protection bounds who may connect and how much, node-wide; the
	// zero value (the default) refuses nothing.
	Protection Protection `yaml:"protection"`

	// Cluster joins this server to a cluster of nodes sharing Redis and
	// NATS; empty (the default) runs one node alone.
	Cluster Cluster `yaml:"cluster"`

	// Switches lists the degrade switches on for the whole node (pause,
	// history_off, recovery_off, presence_off, unread_off,
	// reject_connections); apps[].switches, those on for one app. The
	// admin API can flip them at run time.
	Switches []string `yaml:"switches"`

	// Admin configures the admin API and dashboard under /admin/ on the
	// API listener.
	Admin Admin `yaml:"admin"`

	Log Log `yaml:"log"`
}

// Admin configures the admin API (/admin/v1/...) and the dashboard
// (/admin/): operators' access, separate from the apps' API keys.
type Admin struct {
	// Tokens are the bearer tokens of the admin API, each at least 16
	// characters; several during a rotation. Empty: the admin API answers
	// 404 and the dashboard is off.
	Tokens []string `yaml:"tokens"`
}

// Cluster configures a node of a cluster: the shared engines, and what the
// node tells clients and the other nodes.
type Cluster struct {
	// Redis is the address (host:port) of the Redis that holds the
	// cluster's message store and presence. Set with NATS, it makes this
	// server a node of the cluster.
	Redis string `yaml:"redis"`
	// NATS is the URL of the NATS server (or servers, comma-separated)
	// that carries messages and control between nodes.
	NATS string `yaml:"nats"`
	// Prefix starts every Redis key and NATS subject of the cluster; nodes
	// of one cluster share it, and two clusters on the same engines differ
	// in it.
	Prefix string `yaml:"prefix"`
	// AdvertiseWS and AdvertiseTCP are the addresses clients use to reach
	// this node (a WebSocket URL and a host:port), as listed by
	// GET /v1/cluster; default: the listeners' addresses.
	AdvertiseWS  string `yaml:"advertise_ws"`
	AdvertiseTCP string `yaml:"advertise_tcp"`
	// Lease is how long this node's presence lives in Redis without a
	// renewal: how long a dead node's sessions may still look online.
	Lease time.Duration `yaml:"lease"`
}

// Enabled reports whether the server is a node of a cluster.
func (c Cluster) Enabled() bool { return c.Redis != "" || c.NATS != "" }

// Listener is a network listener. TLS is on when both TLSCert and TLSKey are
// set.
type Listener struct {
	Addr    string `yaml:"addr"`     // host:port
	Path    string `yaml:"path"`     // HTTP path (ws: endpoint; api: optional prefix; tcp: unused)
	TLSCert string `yaml:"tls_cert"` // PEM certificate chain file
	TLSKey  string `yaml:"tls_key"`  // PEM private key file

	// AllowedOrigins (ws only) lists the browser origins allowed to open
	// WebSocket and SSE connections: "*" or scheme://host[:port]. Empty
	// allows any origin; production should set it. A request without an
	// Origin header (not a browser) is always allowed.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// CORSOrigins (api only) lists the browser origins the server API
	// answers CORS requests from, in the same format. Empty: no CORS.
	CORSOrigins []string `yaml:"cors_origins"`
}

// Enabled reports whether the listener has an address.
func (l Listener) Enabled() bool { return l.Addr != "" }

// TLSEnabled reports whether the listener serves TLS.
func (l Listener) TLSEnabled() bool { return l.TLSCert != "" && l.TLSKey != "" }

// App is an application allowed to use the server.
type App struct {
	ID     string `yaml:"id"`
	Secret string `yaml:"secret"` // HS256 secret for client tokens (its bytes, as written)
	// PreviousSecrets are secrets still accepted while clients move to
	// tokens signed with Secret (a key rotation). Tokens are only minted
	// (herald token) with Secret. Remove them, and reload, to end the
	// rotation.
	PreviousSecrets []string `yaml:"previous_secrets,omitempty"`
	APIKeys         []string `yaml:"api_keys"` // keys for the server API
	// Limits bound what the app may use of the server; zero values
	// (the default) are unlimited.
	Limits AppLimits `yaml:"limits"`
	// Switches lists the degrade switches on for this app (see
	// Config.Switches).
	Switches []string `yaml:"switches,omitempty"`
}

// AppLimits are an app's quotas. 0 means unlimited; a burst of 0 with a
// rate set is the rate (one second's worth).
type AppLimits struct {
	// MaxConnections bounds the app's authenticated connections on this
	// node; a CONNECT over it is refused (ERROR 2007, DISCONNECT 3013).
	MaxConnections int `yaml:"max_connections"`
	// APIRate bounds the app's server API requests per second, APIBurst
	// how many may come at once; over it: 429 rate_limited.
	APIRate  int `yaml:"api_rate"`
	APIBurst int `yaml:"api_burst"`
	// PublishRate bounds the messages per second the app pushes,
	// publishes or broadcasts (a call to many users or a bulk push counts
	// each message), PublishBurst how many at once; over it: 429
	// publish_rate_limited.
	PublishRate  int `yaml:"publish_rate"`
	PublishBurst int `yaml:"publish_burst"`
}

// Protection bounds who may connect, checked when a connection is
// accepted. Zero values (the default) are unlimited.
type Protection struct {
	// ConnRatePerIP bounds new connections per second from one source
	// address, ConnBurstPerIP how many at once (0: the rate).
	ConnRatePerIP  int `yaml:"conn_rate_per_ip"`
	ConnBurstPerIP int `yaml:"conn_burst_per_ip"`
	// Flap bans an address that connects too often in a short time.
	Flap Flap `yaml:"flap"`
	// AllowIPs, if not empty, lists the only networks (CIDRs, or single
	// addresses) that may connect; DenyIPs lists networks that may not,
	// and wins.
	AllowIPs []string `yaml:"allow_ips"`
	DenyIPs  []string `yaml:"deny_ips"`
	// MaxConnections bounds the client connections open on this node.
	MaxConnections int `yaml:"max_connections"`
	// MaxMemory refuses new connections while the Go runtime holds more
	// than this many bytes from the OS.
	MaxMemory int `yaml:"max_memory"`
	// MaxCPUPercent refuses new connections while this process kept more
	// than this percentage of its cores (GOMAXPROCS) busy over the last
	// second; 0: no bound.
	MaxCPUPercent int `yaml:"max_cpu_percent"`
}

// Flap configures flapping detection: more than Connects connections from
// one address within Window get it banned for Ban. Connects 0: off.
type Flap struct {
	Connects int           `yaml:"connects"`
	Window   time.Duration `yaml:"window"`
	Ban      time.Duration `yaml:"ban"`
}

// Prefixes parses CIDRs or single addresses; the error names the first
// bad entry.
func Prefixes(entries []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(entries))
	for i, e := range entries {
		p, err := netip.ParsePrefix(e)
		if err != nil {
			a, aerr := netip.ParseAddr(e)
			if aerr != nil {
				return nil, fmt.Errorf("[%d] %q: not a CIDR or an IP address: %w", i, e, err)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level"`  // debug, info, warn or error
	Format string `yaml:"format"` // text or json
	Buffer int    `yaml:"buffer"` // records queued before dropping
}

// Default returns the default configuration. It has no apps; see
// EnsureDevApp.
func Default() Config {
	node, err := os.Hostname()
	if err != nil || !auth.ValidName(node) {
		node = "herald"
	}
	return Config{
		Node:    node,
		DataDir: "./herald-data",
		WS:      Listener{Addr: "127.0.0.1:8080", Path: "/ws"},
		TCP:     Listener{Addr: "127.0.0.1:8090"},
		API:     Listener{Addr: "127.0.0.1:8081"},

		Heartbeat:      180 * time.Second,
		HeartbeatGrace: 30 * time.Second,
		AuthTimeout:    10 * time.Second,
		APIBodyTimeout: 10 * time.Second,

		MaxFrameSize:     64 << 10,
		MaxConnectSize:   8 << 10,
		MaxPayload:       32 << 10,
		OutboundLimit:    1 << 20,
		MaxSubscriptions: 128,
		MaxRecipients:    10000,
		DuplicateLogin:   DuplicateReplace,
		FanoutWorkers:    runtime.NumCPU(),
		GCPercent:        DefaultGCPercent,
		Store:            "embedded",
		Cluster:          Cluster{Prefix: "herald", Lease: 5 * time.Second},
		MessageTTL:       72 * time.Hour,
		MaxRedeliveries:  10,
		HistorySize:      1000,
		HistoryTTL:       time.Hour,

		FrameRate:      1000,
		FrameBurst:     4000,
		SubscribeRate:  10,
		SubscribeBurst: 256,
		ReplayRate:     256 << 10,
		ReplayBurst:    4 << 20,

		Switches: []string{},
		Admin:    Admin{Tokens: []string{}},
		Log:      Log{Level: "info", Format: "text", Buffer: 4096},
	}
}

// AppSecrets returns the app id -> token secret map for auth.NewVerifier.
func (c Config) AppSecrets() map[string][]byte {
	m := make(map[string][]byte, len(c.Apps))
	for _, a := range c.Apps {
		m[a.ID] = []byte(a.Secret)
	}
	return m
}

// AppSecretSets returns the app id -> accepted token secrets map for
// auth.NewRotatingVerifier: each app's Secret, then its PreviousSecrets.
func (c Config) AppSecretSets() map[string][][]byte {
	m := make(map[string][][]byte, len(c.Apps))
	for _, a := range c.Apps {
		m[a.ID] = append(m[a.ID], []byte(a.Secret))
		for _, s := range a.PreviousSecrets {
			m[a.ID] = append(m[a.ID], []byte(s))
		}
	}
	return m
}

// APIKeys returns the API key -> app id map for auth.NewKeys.
func (c Config) APIKeys() map[string]string {
	m := make(map[string]string)
	for _, a := range c.Apps {
		for _, k := range a.APIKeys {
			m[k] = a.ID
		}
	}
	return m
}
