package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrMultipleDocuments means a configuration file holds more than one YAML
// document.
var ErrMultipleDocuments = errors.New("config: more than one YAML document")

// ErrPartial marks an error of Load after which the returned Config is
// usable for reporting: every setting but those the error names was
// applied (unknown keys, values of the wrong type, bad environment
// values), so Validate can report its own problems in the same pass.
var ErrPartial = errors.New("config: some settings were not applied")

// Load returns Default overridden by the YAML file at path (skipped if path
// is empty) and then by HERALD_* environment variables read through lookupEnv
// (nil: none; normally os.LookupEnv). A variable that is set but empty
// overrides too (HERALD_TCP_ADDR= disables the TCP listener). Unknown YAML
// keys are errors; all bad environment values are reported together. An
// error that wraps ErrPartial comes with the Config of every other setting,
// so that a caller can also Validate it and report everything at once.
// Load does not validate: call Validate once flags are parsed.
func Load(path string, lookupEnv func(string) (string, bool)) (Config, error) {
	c := Default()
	var soft []error
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %w", err)
		}
		defer f.Close()
		if err := decode(f, &c); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return Config{}, fmt.Errorf("config: %s: %w", path, err)
			}
			// yaml.v3 decodes the rest and lists what it could not.
			for _, e := range te.Errors {
				soft = append(soft, fmt.Errorf("config: %s: %s", path, e))
			}
		}
	}
	if lookupEnv != nil {
		if err := c.applyEnv(lookupEnv); err != nil {
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				soft = append(soft, j.Unwrap()...)
			} else {
				soft = append(soft, err)
			}
		}
	}
	if len(soft) > 0 {
		return c, partialError(soft)
	}
	return c, nil
}

// partialError is an error of Load that leaves the Config usable: its
// problems, each on a line.
type partialError []error

func (e partialError) Error() string        { return errors.Join(e...).Error() }
func (e partialError) Unwrap() []error      { return e }
func (e partialError) Is(target error) bool { return target == ErrPartial }

// decode reads one YAML document from r into c, keeping the values of c that
// the document does not mention. An empty document is fine.
func decode(r io.Reader, c *Config) error {
	dec := yaml.NewDecoder(r)
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return err
		}
		return ErrMultipleDocuments
	}
	return nil
}

// setting is a value that can be set from both the environment and a flag.
type setting struct {
	flag  string            // flag name; the variable is HERALD_ + upper snake case
	usage string            // flag help
	field func(*Config) any // *string, *int, *time.Duration or *[]string (comma-separated)
}

// env returns the environment variable name of s.
func (s setting) env() string {
	return "HERALD_" + strings.ToUpper(strings.ReplaceAll(s.flag, "-", "_"))
}

// settings lists everything settable by environment and flags.
func settings() []setting {
	return []setting{
		{"node", "node id", func(c *Config) any { return &c.Node }},
		{"data-dir", "data directory", func(c *Config) any { return &c.DataDir }},
		{"ws-addr", "WebSocket listen address", func(c *Config) any { return &c.WS.Addr }},
		{"ws-path", "WebSocket endpoint path", func(c *Config) any { return &c.WS.Path }},
		{"ws-allowed-origins", "comma-separated browser origins allowed on WebSocket and SSE (scheme://host[:port] or *); empty allows any", func(c *Config) any { return &c.WS.AllowedOrigins }},
		{"tcp-addr", "raw TCP listen address (empty disables)", func(c *Config) any { return &c.TCP.Addr }},
		{"api-addr", "server API listen address", func(c *Config) any { return &c.API.Addr }},
		{"api-cors-origins", "comma-separated browser origins allowed to call the server API (CORS); empty: none", func(c *Config) any { return &c.API.CORSOrigins }},
		{"heartbeat", "heartbeat interval announced to clients", func(c *Config) any { return &c.Heartbeat }},
		{"heartbeat-grace", "extra silence allowed after a missed heartbeat", func(c *Config) any { return &c.HeartbeatGrace }},
		{"auth-timeout", "time allowed between accept and CONNECT", func(c *Config) any { return &c.AuthTimeout }},
		{"api-body-timeout", "time a server API request has to send its body", func(c *Config) any { return &c.APIBodyTimeout }},
		{"max-frame-size", "largest frame in bytes", func(c *Config) any { return &c.MaxFrameSize }},
		{"max-payload", "largest message payload in bytes", func(c *Config) any { return &c.MaxPayload }},
		{"max-connect-size", "largest frame or WebSocket message in bytes before CONNECT is accepted", func(c *Config) any { return &c.MaxConnectSize }},
		{"outbound-limit", "bytes queued per connection before disconnecting it", func(c *Config) any { return &c.OutboundLimit }},
		{"max-subscriptions", "subscriptions per connection", func(c *Config) any { return &c.MaxSubscriptions }},
		{"max-recipients", "users per API call", func(c *Config) any { return &c.MaxRecipients }},
		{"frame-rate", "frames per second one connection may send", func(c *Config) any { return &c.FrameRate }},
		{"frame-burst", "frames one connection may send at once", func(c *Config) any { return &c.FrameBurst }},
		{"subscribe-rate", "SUBSCRIBE and UNSUBSCRIBE requests per second per connection", func(c *Config) any { return &c.SubscribeRate }},
		{"subscribe-burst", "SUBSCRIBE and UNSUBSCRIBE requests at once per connection", func(c *Config) any { return &c.SubscribeBurst }},
		{"replay-rate", "bytes of history one connection may recover per second", func(c *Config) any { return &c.ReplayRate }},
		{"replay-burst", "bytes of history one connection may recover at once", func(c *Config) any { return &c.ReplayBurst }},
		{"duplicate-login", "on a duplicate login: replace or refuse", func(c *Config) any { return &c.DuplicateLogin }},
		{"fanout-workers", "goroutines delivering published messages", func(c *Config) any { return &c.FanoutWorkers }},
		{"admin-tokens", "comma-separated bearer tokens of the admin API and dashboard (/admin/); empty: off", func(c *Config) any { return &c.Admin.Tokens }},
		{"switches", "comma-separated degrade switches on for the whole node (pause, history_off, recovery_off, presence_off, unread_off, reject_connections)", func(c *Config) any { return &c.Switches }},
		{"store", "message store: embedded (on disk under the data directory) or memory", func(c *Config) any { return &c.Store }},
		{"store-sync", "0: fsync every append before answering; a duration: fsync at most that often", func(c *Config) any { return &c.StoreSync }},
		{"max-redeliveries", "connections in a row a device may start at the same unacknowledged message before it is skipped; 0 = no limit", func(c *Config) any { return &c.MaxRedeliveries }},
		{"history-size", "recent messages kept per topic and broadcast stream for recovery; 0 = live only", func(c *Config) any { return &c.HistorySize }},
		{"history-ttl", "how long a topic or broadcast message stays in history", func(c *Config) any { return &c.HistoryTTL }},
		{"message-ttl", "default lifetime of an undelivered inbox message", func(c *Config) any { return &c.MessageTTL }},
		{"pprof-addr", "serve Go profiling (net/http/pprof) on this address; empty disables", func(c *Config) any { return &c.PprofAddr }},
		{"gc-percent", "Go GC target percentage; lower trades CPU for memory (a GOGC environment variable wins)", func(c *Config) any { return &c.GCPercent }},
		{"cluster-redis", "Redis host:port of the cluster (with cluster-nats: run as a node of a cluster)", func(c *Config) any { return &c.Cluster.Redis }},
		{"cluster-nats", "NATS URL of the cluster", func(c *Config) any { return &c.Cluster.NATS }},
		{"cluster-prefix", "prefix of the cluster's Redis keys and NATS subjects", func(c *Config) any { return &c.Cluster.Prefix }},
		{"cluster-advertise-ws", "WebSocket URL clients use to reach this node", func(c *Config) any { return &c.Cluster.AdvertiseWS }},
		{"cluster-advertise-tcp", "TCP host:port clients use to reach this node", func(c *Config) any { return &c.Cluster.AdvertiseTCP }},
		{"cluster-lease", "how long this node's presence lives without a renewal", func(c *Config) any { return &c.Cluster.Lease }},
		{"protection-conn-rate-per-ip", "new connections per second from one source address; 0 = unlimited", func(c *Config) any { return &c.Protection.ConnRatePerIP }},
		{"protection-conn-burst-per-ip", "new connections at once from one source address; 0 = the rate", func(c *Config) any { return &c.Protection.ConnBurstPerIP }},
		{"protection-flap-connects", "connections from one address within the flap window that get it banned; 0 = off", func(c *Config) any { return &c.Protection.Flap.Connects }},
		{"protection-flap-window", "the flap detection window", func(c *Config) any { return &c.Protection.Flap.Window }},
		{"protection-flap-ban", "how long a flapping address is banned", func(c *Config) any { return &c.Protection.Flap.Ban }},
		{"protection-allow-ips", "comma-separated CIDRs that alone may connect; empty: any", func(c *Config) any { return &c.Protection.AllowIPs }},
		{"protection-deny-ips", "comma-separated CIDRs that may not connect", func(c *Config) any { return &c.Protection.DenyIPs }},
		{"protection-max-connections", "client connections open on this node; 0 = unlimited", func(c *Config) any { return &c.Protection.MaxConnections }},
		{"protection-max-cpu-percent", "percentage of its cores the process may keep busy before new connections are refused; 0 = unlimited", func(c *Config) any { return &c.Protection.MaxCPUPercent }},
		{"protection-max-memory", "bytes the Go runtime may hold before new connections are refused; 0 = unlimited", func(c *Config) any { return &c.Protection.MaxMemory }},
		{"log-level", "log level: debug, info, warn or error", func(c *Config) any { return &c.Log.Level }},
		{"log-format", "log format: text or json", func(c *Config) any { return &c.Log.Format }},
		{"log-buffer", "log records queued before dropping", func(c *Config) any { return &c.Log.Buffer }},
	}
}

// applyEnv sets c's fields from the environment.
func (c *Config) applyEnv(lookupEnv func(string) (string, bool)) error {
	var errs []error
	for _, s := range settings() {
		v, ok := lookupEnv(s.env())
		if !ok {
			continue
		}
		switch p := s.field(c).(type) {
		case *string:
			*p = v
		case *[]string:
			*p = splitList(v)
		case *int:
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("config: %s: %w", s.env(), err))
				continue
			}
			*p = n
		case *time.Duration:
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Errorf("config: %s: %w", s.env(), err))
				continue
			}
			*p = d
		}
	}
	return errors.Join(errs...)
}

// BindFlags defines on fs one flag per environment setting (-node,
// -data-dir, -ws-addr, -tcp-addr, -api-addr, -heartbeat, -log-level, ...).
// Each flag defaults to c's current value and writes into c when fs is
// parsed, so c must stay where it is (not be copied) until then.
func (c *Config) BindFlags(fs *flag.FlagSet) { c.bindFlags(fs, nil) }

// BindFlagsOnly is BindFlags for the named flags alone (a tool that needs
// only -data-dir, say, should not list the server's flags in its help).
func (c *Config) BindFlagsOnly(fs *flag.FlagSet, names ...string) {
	if names == nil {
		names = []string{}
	}
	c.bindFlags(fs, names)
}

// bindFlags binds the settings named (all of them when names is nil).
func (c *Config) bindFlags(fs *flag.FlagSet, names []string) {
	for _, s := range settings() {
		if names != nil && !slices.Contains(names, s.flag) {
			continue
		}
		usage := fmt.Sprintf("%s (env %s)", s.usage, s.env())
		switch p := s.field(c).(type) {
		case *string:
			fs.StringVar(p, s.flag, *p, usage)
		case *int:
			fs.IntVar(p, s.flag, *p, usage)
		case *time.Duration:
			fs.DurationVar(p, s.flag, *p, usage)
		case *[]string:
			fs.Var((*listFlag)(p), s.flag, usage)
		}
	}
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// listFlag is a comma-separated list flag; each use replaces the list.
type listFlag []string

// String implements flag.Value.
func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(*l, ",")
}

// Set implements flag.Value.
func (l *listFlag) Set(v string) error {
	*l = splitList(v)
	return nil
}
