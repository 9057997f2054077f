package config

// Example returns a commented example configuration file. Its values are the
// defaults, plus one placeholder app.
func Example() string { return example }

const example = `# herald configuration.
#
# Every key is optional; the values shown are the defaults. Durations are
# strings such as "180s", "3m" or "1m30s". Unknown keys are errors.
#
# Precedence: defaults < this file < HERALD_* environment variables < flags.
# For example HERALD_WS_ADDR or -ws-addr overrides ws.addr.

# Node id, used in logs and metrics. Default: the host name.
# node: herald-1

# Directory for server state, including dev-app.yaml when no apps are
# configured.
data_dir: ./herald-data

# WebSocket listener for clients. TLS is on when both tls_cert and tls_key
# (PEM files) are set. The SSE transport (for clients that cannot use
# WebSocket) is served on the same listener, beside path: /ws -> /sse.
ws:
  addr: 127.0.0.1:8080
  path: /ws
  # tls_cert: /etc/herald/tls/cert.pem
  # tls_key: /etc/herald/tls/key.pem
  # Browser origins allowed to connect (WebSocket and SSE): "*" or
  # scheme://host[:port]. Empty (the default) allows any origin: set it in
  # production, so that other sites' pages cannot connect with your users'
  # tokens. Requests without an Origin header (apps, servers) are always
  # allowed; a disallowed origin gets 403 origin_not_allowed.
  # allowed_origins:
  #   - https://app.example.com

# Raw TCP listener for clients (length-prefixed frames). An empty addr
# disables it. Takes tls_cert and tls_key like ws.
tcp:
  addr: 127.0.0.1:8090

# HTTP server API for app backends, and /metrics. Takes tls_cert and tls_key
# like ws, and an optional path prefix.
api:
  addr: 127.0.0.1:8081
  # Browser origins allowed to call the API (CORS), in the same format.
  # Empty (the default): no CORS headers, browsers cannot call it. API keys
  # are secrets: only list origins of trusted internal tools.
  # cors_origins:
  #   - https://admin.example.com

# Apps allowed to use the server. With no apps, herald creates a development
# app in data_dir/dev-app.yaml.
apps:
  - id: demo
    # HS256 secret that the app backend signs client tokens with; at least
    # 16 bytes.
    secret: change-me-to-a-long-random-secret
    # Secrets still accepted during a rotation: put the new secret in
    # secret, the old one here, reload (SIGHUP); once clients have new
    # tokens, remove it and reload again.
    # previous_secrets:
    #   - the-old-secret
    # Keys the app backend sends to the server API: at least one, each at
    # least 16 characters, unique across apps.
    api_keys:
      - change-me-to-a-long-random-api-key
    # Quotas of the app; 0 (the default) is unlimited. A *_burst of 0 with
    # its rate set is the rate.
    limits:
      # Authenticated connections of the app on this node; a CONNECT over
      # it gets ERROR 2007 and DISCONNECT 3013 (reconnect with backoff).
      max_connections: 0
      # Server API requests per second, and at once; over it: 429
      # rate_limited with Retry-After.
      api_rate: 0
      api_burst: 0
      # Messages per second pushed, published or broadcast (a call to many
      # users or a bulk push counts each message), and at once; over it:
      # 429 publish_rate_limited with Retry-After.
      publish_rate: 0
      publish_burst: 0
    # Degrade switches on for this app (see switches below).
    # switches: [pause]

# Heartbeat interval announced to clients.
heartbeat: 180s
# A connection silent for heartbeat + heartbeat_grace is closed.
heartbeat_grace: 30s
# Time allowed between accepting a connection and a valid CONNECT; at most
# heartbeat.
auth_timeout: 10s
# Time a server API request has to send its body, from when its headers
# are read; a body still coming after it is cut with 408 and the
# connection closed.
api_body_timeout: 10s

# Largest frame in bytes (1024 to 16777216).
max_frame_size: 65536
# Largest message payload in bytes; less than max_frame_size.
max_payload: 32768
# Largest frame, or WebSocket message, a client may send before its CONNECT
# is accepted (1024 to max_frame_size). A CONNECT with a token and resume
# positions fits; an unauthenticated client can make the server hold no
# more than this.
max_connect_size: 8192
# Bytes queued to one connection before it is disconnected as a slow
# consumer; at least 65536 and at least max_frame_size.
outbound_limit: 1048576
# Subscriptions per connection.
max_subscriptions: 128
# Users per server API call.
max_recipients: 10000
# When a login duplicates an existing connection: "replace" closes the old
# connection, "refuse" rejects the new one.
duplicate_login: replace
# Goroutines delivering published messages. Default: the number of CPUs.
# fanout_workers: 8
# Go GC target percentage (GOGC). The heap is mostly long-lived connection
# state: 50 keeps RSS near 1.5x that state at the cost of more frequent
# collections; 100 (the Go default) lets it reach 2x. A GOGC environment
# variable, if set, wins.
gc_percent: 50
# Message store for user inboxes: "embedded" keeps them on disk under
# data_dir/store (store-then-send: the API answers after the message is
# durable); "memory" loses them on restart; "redis" is a cluster's (see
# cluster below).
store: embedded
# 0: every append is fsynced before the API answers (group commit shares
# fsyncs between concurrent pushes). A duration such as 10ms: fsync at most
# that often, faster, and a crash of the machine may lose that much.
store_sync: 0s
# How long an undelivered inbox message is kept by default (a push may set
# its own ttl).
message_ttl: 72h
# A device that connects again and again without acknowledging the message
# at its position (a client that crashes on it) gets it this many times;
# then the message is skipped for that device and counted as undeliverable.
# 0 = no limit.
max_redeliveries: 10
# Recent messages kept per topic and per app's broadcast stream, so that a
# client resubscribing with its last (epoch, seq) gets what it missed. Kept
# for at most history_ttl. history_size 0: topics and broadcasts are live only.
history_size: 1000
history_ttl: 1h
# Per-connection bounds on what one client can make the server do; healthy
# clients stay far below them. Over frame_rate (every frame of a batch and
# WebSocket pings count) or subscribe_rate the client gets ERROR 2006 rate
# limited and DISCONNECT 3012 policy violation. A *_burst is how many may
# come at once before the rate applies; subscribe_burst must be at least
# max_subscriptions, frame_burst at least subscribe_burst.
frame_rate: 1000
frame_burst: 4000
subscribe_rate: 10
subscribe_burst: 256
# Bytes of topic and broadcast history one connection may recover per
# second, and at once (with a full bucket, one recovery of up to
# outbound_limit/4, the largest there is, is always allowed).
# Past them a recovery is answered "cannot recover" instead of replayed.
replay_rate: 262144
replay_burst: 4194304
# Protection against floods of connections, checked when a connection is
# accepted, before it costs anything: a refused TCP connection is closed, a
# refused WebSocket or SSE request gets 403 (address lists), 429 (per
# address) or 503 (overload) with Retry-After. 0 and empty lists (the
# defaults) refuse nothing.
protection:
  # New connections per second from one source address, and at once (0:
  # the rate).
  conn_rate_per_ip: 0
  conn_burst_per_ip: 0
  # More than connects connections from one address within window get it
  # banned for ban (one log line per ban). connects 0: off.
  flap:
    connects: 0
    window: 0s
    ban: 0s
  # Only these networks (CIDRs or addresses) may connect; empty: any.
  # allow_ips:
  #   - 10.0.0.0/8
  # These may not; deny wins over allow.
  # deny_ips:
  #   - 192.0.2.0/24
  # Client connections open on this node (authenticated or not); new ones
  # are refused over it while existing ones are served.
  max_connections: 0
  # Bytes the Go runtime may hold from the OS before new connections are
  # refused (sampled on the timing wheel, at least once a second).
  max_memory: 0
  # Percentage of its cores (GOMAXPROCS) this process may keep busy, over
  # the last second, before new connections are refused: room is kept for
  # the connections already open (a reconnection storm backs off instead
  # of starving them).
  max_cpu_percent: 0

# Serve Go profiling endpoints (net/http/pprof) on this address, for
# diagnosis. Keep it on loopback. Empty (the default) disables it.
# pprof_addr: 127.0.0.1:6060

# Run as a node of a cluster (docs/cluster.md): every node shares one Redis
# (message store and presence; store must then be "redis") and one NATS
# (messages and control between nodes). Empty redis and nats (the default):
# one node alone, with the embedded store.
cluster:
  # redis: 127.0.0.1:6379
  # nats: nats://127.0.0.1:4222
  # Starts every Redis key and NATS subject of the cluster.
  prefix: herald
  # Addresses clients use to reach this node, listed by GET /v1/cluster.
  # Default: the listeners' addresses.
  # advertise_ws: ws://10.0.0.5:8080/ws
  # advertise_tcp: 10.0.0.5:8090
  # How long this node's presence lives without a renewal: how long the
  # sessions of a node that died may still look online.
  lease: 5s

# Degrade switches on for the whole node; apps[].switches turns them on
# for one app, and the admin API flips them at run time (its changes are
# kept across restarts: in data_dir/switches.json, or in Redis in a
# cluster). pause: pushes and publishes are stored but not delivered
# until it is off; history_off: topics and broadcasts are live only;
# recovery_off: recoveries answer "cannot recover"; presence_off and
# unread_off: those queries answer 503; reject_connections: new
# connections are refused. Reloadable.
switches: []

# The admin API (/admin/v1/...) and live dashboard (/admin/) on the API
# listener, for operators: bearer tokens of at least 16 characters, several
# during a rotation. Empty (the default): off. Reloadable.
admin:
  tokens: []

log:
  # debug, info, warn or error.
  level: info
  # text or json.
  format: text
  # Records queued for the log writer before new ones are dropped.
  buffer: 4096
`
