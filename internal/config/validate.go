package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"github.com/herald-push/herald/internal/switches"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/logging"
	"github.com/herald-push/herald/internal/origin"
)

// Limits enforced by Validate.
const (
	MinFrameSize    = 1 << 10  // smallest MaxFrameSize
	MaxFrameSizeCap = 16 << 20 // largest MaxFrameSize
	// DefaultGCPercent is the default Go GC target. A push server's heap is
	// mostly long-lived connection state; the runtime default of 100 lets
	// the heap (and RSS) grow to twice that state between collections.
	DefaultGCPercent = 50
	MinOutboundLimit = 64 << 10 // smallest OutboundLimit: one merged write of several frames
	MinAPIKeyLen     = 16       // shortest API key, in bytes
	MinConnectSize   = 1 << 10  // smallest MaxConnectSize
	MaxBurst         = 4000000  // largest FrameBurst and SubscribeBurst
)

// problems collects validation errors, each prefixed by the field it names.
type problems []error

func (p *problems) add(field, format string, args ...any) {
	*p = append(*p, fmt.Errorf("%s: %w", field, fmt.Errorf(format, args...)))
}

// Validate checks every field and cross-field rule and returns all problems
// found, joined with errors.Join, each prefixed by the YAML path of the field
// (for example "apps[1].secret: must be at least 16 bytes"). It reads the TLS
// files. An empty Apps list is valid: see EnsureDevApp.
func (c Config) Validate() error {
	var p problems

	if !auth.ValidName(c.Node) {
		p.add("node", "must be 1-%d printable characters without spaces", auth.MaxNameLen)
	} else if c.Node == "*" {
		p.add("node", `"*" is reserved (the control subject of every node)`)
	}
	if c.DataDir == "" {
		p.add("data_dir", "must not be empty")
	}

	c.WS.check(&p, "ws", true, pathRequired)
	c.TCP.check(&p, "tcp", false, pathUnused)
	c.API.check(&p, "api", true, pathOptional)
	checkOrigins(&p, "ws.allowed_origins", c.WS.AllowedOrigins)
	checkOrigins(&p, "api.cors_origins", c.API.CORSOrigins)
	for _, l := range []named{{"tcp", c.TCP}, {"api", c.API}} {
		if len(l.l.AllowedOrigins) > 0 {
			p.add(l.name+".allowed_origins", "is not used by this listener (see ws.allowed_origins)")
		}
	}
	for _, l := range []named{{"ws", c.WS}, {"tcp", c.TCP}} {
		if len(l.l.CORSOrigins) > 0 {
			p.add(l.name+".cors_origins", "is not used by this listener (see api.cors_origins)")
		}
	}
	if c.WS.Path != "" && path.Base(c.WS.Path) == "sse" {
		p.add("ws.path", "must not end in /sse: the SSE transport is served there")
	}
	checkDistinct(&p, []named{{"ws", c.WS}, {"tcp", c.TCP}, {"api", c.API}})

	if c.Heartbeat <= 0 {
		p.add("heartbeat", "must be positive")
	}
	if c.HeartbeatGrace <= 0 {
		p.add("heartbeat_grace", "must be positive")
	}
	if c.AuthTimeout <= 0 {
		p.add("auth_timeout", "must be positive")
	} else if c.AuthTimeout > c.Heartbeat && c.Heartbeat > 0 {
		p.add("auth_timeout", "must not exceed heartbeat (%v)", c.Heartbeat)
	}

	if c.APIBodyTimeout <= 0 {
		p.add("api_body_timeout", "must be positive")
	}

	if c.MaxFrameSize < MinFrameSize || c.MaxFrameSize > MaxFrameSizeCap {
		p.add("max_frame_size", "must be between %d and %d", MinFrameSize, MaxFrameSizeCap)
	}
	if c.MaxPayload <= 0 {
		p.add("max_payload", "must be positive")
	} else if c.MaxPayload >= c.MaxFrameSize {
		p.add("max_payload", "must be less than max_frame_size (%d)", c.MaxFrameSize)
	}
	if c.MaxConnectSize < MinConnectSize {
		p.add("max_connect_size", "must be at least %d", MinConnectSize)
	} else if c.MaxConnectSize > c.MaxFrameSize && c.MaxFrameSize >= MinFrameSize {
		p.add("max_connect_size", "must not exceed max_frame_size (%d)", c.MaxFrameSize)
	}
	c.checkRates(&p)
	if c.OutboundLimit < MinOutboundLimit {
		p.add("outbound_limit", "must be at least %d", MinOutboundLimit)
	} else if c.OutboundLimit < c.MaxFrameSize {
		p.add("outbound_limit", "must be at least max_frame_size (%d)", c.MaxFrameSize)
	}
	if c.MaxSubscriptions < 1 {
		p.add("max_subscriptions", "must be at least 1")
	}
	if c.MaxRecipients < 1 {
		p.add("max_recipients", "must be at least 1")
	}
	if c.DuplicateLogin != DuplicateReplace && c.DuplicateLogin != DuplicateRefuse {
		p.add("duplicate_login", "must be %q or %q, not %q", DuplicateReplace, DuplicateRefuse, c.DuplicateLogin)
	}
	if c.Store != "embedded" && c.Store != "memory" && c.Store != "redis" {
		p.add("store", "must be \"embedded\", \"memory\" or \"redis\", not %q", c.Store)
	}
	c.Cluster.check(&p, c.Store)
	if c.StoreSync < 0 {
		p.add("store_sync", "must not be negative")
	}
	if c.MaxRedeliveries < 0 {
		p.add("max_redeliveries", "must not be negative")
	}
	if c.HistorySize < 0 {
		p.add("history_size", "must not be negative")
	}
	if c.HistorySize > 0 && c.HistoryTTL < time.Second {
		p.add("history_ttl", "must be at least 1s")
	}
	if c.MessageTTL < time.Second {
		p.add("message_ttl", "must be at least 1s")
	}
	if c.PprofAddr != "" {
		if err := checkAddr(c.PprofAddr); err != nil {
			p.add("pprof_addr", "%v", err)
		}
	}
	if c.GCPercent < 10 || c.GCPercent > 1000 {
		p.add("gc_percent", "must be between 10 and 1000")
	}
	if c.FanoutWorkers < 1 {
		p.add("fanout_workers", "must be at least 1")
	}

	if _, err := logging.ParseLevel(c.Log.Level); err != nil {
		p.add("log.level", "%w", err)
	}
	if _, err := logging.ParseFormat(c.Log.Format); err != nil {
		p.add("log.format", "%w", err)
	}
	if c.Log.Buffer < 1 {
		p.add("log.buffer", "must be at least 1")
	}

	c.Protection.check(&p)
	checkApps(&p, c.Apps)
	checkSwitches(&p, "switches", c.Switches)
	for i, a := range c.Apps {
		checkSwitches(&p, fmt.Sprintf("apps[%d].switches", i), a.Switches)
	}
	for i, t := range c.Admin.Tokens {
		if len(t) < 16 {
			p.add(fmt.Sprintf("admin.tokens[%d]", i), "must be at least 16 characters")
		}
	}
	return errors.Join(p...)
}

// checkRates validates the per-connection rates.
func (c Config) checkRates(p *problems) {
	for _, r := range []struct {
		field string
		v     int
	}{{"frame_rate", c.FrameRate}, {"subscribe_rate", c.SubscribeRate}, {"replay_rate", c.ReplayRate}} {
		if r.v < 1 {
			p.add(r.field, "must be at least 1")
		}
	}
	if c.FrameBurst < 1 || c.FrameBurst > MaxBurst {
		p.add("frame_burst", "must be between 1 and %d", MaxBurst)
	} else if c.FrameBurst < c.SubscribeBurst {
		p.add("frame_burst", "must be at least subscribe_burst (%d)", c.SubscribeBurst)
	}
	if c.SubscribeBurst < 1 || c.SubscribeBurst > MaxBurst {
		p.add("subscribe_burst", "must be between 1 and %d", MaxBurst)
	} else if c.SubscribeBurst < c.MaxSubscriptions {
		p.add("subscribe_burst", "must be at least max_subscriptions (%d): a reconnecting client subscribes again at once", c.MaxSubscriptions)
	}
	if c.ReplayBurst < 1 {
		p.add("replay_burst", "must be at least 1")
	}
}

// checkOrigins validates a list of allowed origins.
func checkOrigins(p *problems, field string, entries []string) {
	for i, e := range entries {
		if err := origin.Check(e); err != nil {
			p.add(fmt.Sprintf("%s[%d]", field, i), "%q: %w", e, err)
		}
	}
}

// pathRule says what a listener's Path may be.
type pathRule int

const (
	pathUnused   pathRule = iota // must be empty
	pathOptional                 // empty or starting with "/"
	pathRequired                 // starting with "/"
)

// check validates a listener whose YAML key is name.
func (l Listener) check(p *problems, name string, addrRequired bool, rule pathRule) {
	switch {
	case l.Addr == "" && addrRequired:
		p.add(name+".addr", "must not be empty")
	case l.Addr != "":
		if err := checkAddr(l.Addr); err != nil {
			p.add(name+".addr", "%w", err)
		}
	}

	switch {
	case rule == pathUnused && l.Path != "":
		p.add(name+".path", "is not used by this listener")
	case rule == pathRequired && l.Path == "":
		p.add(name+".path", "must not be empty")
	case l.Path != "" && l.Path[0] != '/':
		p.add(name+".path", "must start with \"/\"")
	}

	switch {
	case l.TLSCert == "" && l.TLSKey == "":
	case l.TLSCert == "":
		p.add(name+".tls_cert", "must be set when tls_key is")
	case l.TLSKey == "":
		p.add(name+".tls_key", "must be set when tls_cert is")
	default:
		checkTLS(p, name, l.TLSCert, l.TLSKey)
	}
}

// checkAddr checks that addr is host:port with a numeric port.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// checkTLS checks that the certificate and key files are regular files that
// form a valid pair.
func checkTLS(p *problems, name, cert, key string) {
	ok := true
	for _, f := range [...]struct{ field, path string }{{name + ".tls_cert", cert}, {name + ".tls_key", key}} {
		fi, err := os.Stat(f.path)
		switch {
		case err != nil:
			p.add(f.field, "%w", err)
			ok = false
		case !fi.Mode().IsRegular():
			p.add(f.field, "%s is not a regular file", f.path)
			ok = false
		}
	}
	if !ok {
		return
	}
	if _, err := tls.LoadX509KeyPair(cert, key); err != nil {
		p.add(name+".tls_cert", "%w", err)
	}
}

// named is a listener with its YAML key.
type named struct {
	name string
	l    Listener
}

// checkDistinct reports listeners sharing an address (port 0 excepted).
func checkDistinct(p *problems, ls []named) {
	seen := make(map[string]string)
	for _, n := range ls {
		addr := n.l.Addr
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
			continue
		}
		if prev, dup := seen[addr]; dup {
			p.add(n.name+".addr", "same as %s.addr (%s)", prev, addr)
			continue
		}
		seen[addr] = n.name
	}
}

// checkApps validates the apps list, including ids and API keys that must be
// unique across apps. Secrets and keys never appear in messages.
func checkApps(p *problems, apps []App) {
	ids := make(map[string]int)
	keys := make(map[string]string)
	for i, a := range apps {
		f := fmt.Sprintf("apps[%d]", i)
		checkApp(p, f, a)
		if j, dup := ids[a.ID]; dup && a.ID != "" {
			p.add(f+".id", "duplicate of apps[%d].id %q", j, a.ID)
		} else {
			ids[a.ID] = i
		}
		for k, key := range a.APIKeys {
			kf := fmt.Sprintf("%s.api_keys[%d]", f, k)
			if prev, dup := keys[key]; dup && key != "" {
				p.add(kf, "duplicate of %s", prev)
			} else {
				keys[key] = kf
			}
		}
	}
}

// checkApp validates one app on its own; f is its field path.
func checkApp(p *problems, f string, a App) {
	if !auth.ValidName(a.ID) {
		p.add(f+".id", "must be 1-%d printable characters without spaces", auth.MaxNameLen)
	}
	if len(a.Secret) < auth.MinSecretLen {
		p.add(f+".secret", "must be at least %d bytes", auth.MinSecretLen)
	}
	for k, prev := range a.PreviousSecrets {
		pf := fmt.Sprintf("%s.previous_secrets[%d]", f, k)
		switch {
		case len(prev) < auth.MinSecretLen:
			p.add(pf, "must be at least %d bytes", auth.MinSecretLen)
		case prev == a.Secret:
			p.add(pf, "is the same as secret")
		}
	}
	if len(a.APIKeys) == 0 {
		p.add(f+".api_keys", "must have at least one key")
	}
	a.Limits.check(p, f+".limits")
	for k, key := range a.APIKeys {
		if len(key) < MinAPIKeyLen || !auth.ValidName(key) {
			p.add(fmt.Sprintf("%s.api_keys[%d]", f, k), "must be %d-%d printable characters without spaces", MinAPIKeyLen, auth.MaxNameLen)
		}
	}
}

// check validates the cluster section; store is the configured store.
func (c Cluster) check(p *problems, store string) {
	if !c.Enabled() {
		if store == "redis" {
			p.add("store", "\"redis\" is the store of a cluster: set cluster.redis and cluster.nats")
		}
		return
	}
	if c.Redis == "" {
		p.add("cluster.redis", "must be set with cluster.nats (host:port of the cluster's Redis)")
	} else if _, _, err := net.SplitHostPort(c.Redis); err != nil {
		p.add("cluster.redis", "must be host:port: %v", err)
	}
	if c.NATS == "" {
		p.add("cluster.nats", "must be set with cluster.redis (URL of the cluster's NATS)")
	}
	if store != "redis" {
		p.add("store", "must be \"redis\" in a cluster (every node reads and writes the same messages), not %q", store)
	}
	if c.Prefix == "" || strings.ContainsAny(c.Prefix, " .*>") {
		p.add("cluster.prefix", "must be non-empty, without spaces, dots, * or >")
	}
	if c.AdvertiseWS != "" && !strings.HasPrefix(c.AdvertiseWS, "ws://") && !strings.HasPrefix(c.AdvertiseWS, "wss://") {
		p.add("cluster.advertise_ws", "must be a ws:// or wss:// URL")
	}
	if c.AdvertiseTCP != "" {
		if _, _, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(c.AdvertiseTCP, "tcp://"), "tls://")); err != nil {
			p.add("cluster.advertise_tcp", "must be host:port: %v", err)
		}
	}
	if c.Lease < time.Second {
		p.add("cluster.lease", "must be at least 1s")
	}
}

// checkRate validates a rate (0: unlimited) and its burst (0 to MaxBurst;
// 0 with a rate set means the rate; a burst without a rate is a mistake).
func checkRate(p *problems, f, rateName, burstName string, rate, burst int) {
	if rate < 0 {
		p.add(f+rateName, "must be 0 (unlimited) or more")
	}
	if burst < 0 || burst > MaxBurst {
		p.add(f+burstName, "must be between 0 and %d", MaxBurst)
	} else if burst > 0 && rate == 0 {
		p.add(f+burstName, "is set but %s is 0 (unlimited)", rateName)
	}
	if burst == 0 && rate > MaxBurst {
		p.add(f+rateName, "must be at most %d with %s 0 (the burst is then the rate)", MaxBurst, burstName)
	}
}

// check validates an app's limits; f is their field path.
func (l AppLimits) check(p *problems, f string) {
	if l.MaxConnections < 0 {
		p.add(f+".max_connections", "must be 0 (unlimited) or more")
	}
	checkRate(p, f+".", "api_rate", "api_burst", l.APIRate, l.APIBurst)
	checkRate(p, f+".", "publish_rate", "publish_burst", l.PublishRate, l.PublishBurst)
}

// check validates the protection section.
func (pr Protection) check(p *problems) {
	checkRate(p, "protection.", "conn_rate_per_ip", "conn_burst_per_ip", pr.ConnRatePerIP, pr.ConnBurstPerIP)
	fl := pr.Flap
	if fl.Connects < 0 {
		p.add("protection.flap.connects", "must be 0 (off) or more")
	}
	if fl.Connects > 0 {
		if fl.Window <= 0 {
			p.add("protection.flap.window", "must be positive when flap.connects is set")
		}
		if fl.Ban <= 0 {
			p.add("protection.flap.ban", "must be positive when flap.connects is set")
		}
	} else if fl.Window < 0 || fl.Ban < 0 {
		p.add("protection.flap", "window and ban must not be negative")
	}
	for _, l := range []struct {
		f string
		v []string
	}{{"protection.allow_ips", pr.AllowIPs}, {"protection.deny_ips", pr.DenyIPs}} {
		for i, e := range l.v {
			if _, err := Prefixes([]string{e}); err != nil {
				p.add(fmt.Sprintf("%s[%d]", l.f, i), "%q: not a CIDR (10.0.0.0/8, fd00::/8) or an IP address", e)
			}
		}
	}
	if pr.MaxConnections < 0 {
		p.add("protection.max_connections", "must be 0 (unlimited) or more")
	}
	if pr.MaxMemory < 0 {
		p.add("protection.max_memory", "must be 0 (unlimited) or more bytes")
	}
	if pr.MaxCPUPercent < 0 || pr.MaxCPUPercent > 100 {
		p.add("protection.max_cpu_percent", "must be 0 (unlimited) to 100")
	}
}

// checkSwitches validates a list of degrade switch names.
func checkSwitches(p *problems, field string, names []string) {
	seen := map[string]bool{}
	for i, n := range names {
		if _, err := switches.Parse(n); err != nil {
			p.add(fmt.Sprintf("%s[%d]", field, i), "%w", err)
		} else if seen[n] {
			p.add(fmt.Sprintf("%s[%d]", field, i), "%q is listed twice", n)
		}
		seen[n] = true
	}
}
