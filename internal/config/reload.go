package config

import (
	"fmt"
	"reflect"
	"slices"
)

// reloadable lists, by YAML path, the settings a running server can take
// from a new configuration (Server.Reload, SIGHUP). Every other setting is
// fixed for the life of the process: see Fixed.
var reloadable = []string{
	"apps", "log.level",
	"frame_rate", "frame_burst", "subscribe_rate", "subscribe_burst",
	"replay_rate", "replay_burst", "max_subscriptions",
	"switches", "admin",
}

// ReloadableSettings returns the YAML paths of the settings a running
// server can change (a copy).
func ReloadableSettings() []string { return slices.Clone(reloadable) }

// fixedSettings lists the settings a running server cannot change, each
// with a getter; every Config field is in reloadable or here (a test
// checks it).
func fixedSettings() []struct {
	name string
	get  func(Config) any
} {
	return []struct {
		name string
		get  func(Config) any
	}{
		{"node", func(c Config) any { return c.Node }},
		{"data_dir", func(c Config) any { return c.DataDir }},
		{"ws.addr", func(c Config) any { return c.WS.Addr }},
		{"ws.path", func(c Config) any { return c.WS.Path }},
		{"ws.tls_cert", func(c Config) any { return c.WS.TLSCert }},
		{"ws.tls_key", func(c Config) any { return c.WS.TLSKey }},
		{"ws.allowed_origins", func(c Config) any { return c.WS.AllowedOrigins }},
		{"ws.cors_origins", func(c Config) any { return c.WS.CORSOrigins }},
		{"tcp.addr", func(c Config) any { return c.TCP.Addr }},
		{"tcp.path", func(c Config) any { return c.TCP.Path }},
		{"tcp.tls_cert", func(c Config) any { return c.TCP.TLSCert }},
		{"tcp.tls_key", func(c Config) any { return c.TCP.TLSKey }},
		{"tcp.allowed_origins", func(c Config) any { return c.TCP.AllowedOrigins }},
		{"tcp.cors_origins", func(c Config) any { return c.TCP.CORSOrigins }},
		{"api.addr", func(c Config) any { return c.API.Addr }},
		{"api.path", func(c Config) any { return c.API.Path }},
		{"api.tls_cert", func(c Config) any { return c.API.TLSCert }},
		{"api.tls_key", func(c Config) any { return c.API.TLSKey }},
		{"api.allowed_origins", func(c Config) any { return c.API.AllowedOrigins }},
		{"api.cors_origins", func(c Config) any { return c.API.CORSOrigins }},
		{"heartbeat", func(c Config) any { return c.Heartbeat }},
		{"heartbeat_grace", func(c Config) any { return c.HeartbeatGrace }},
		{"auth_timeout", func(c Config) any { return c.AuthTimeout }},
		{"api_body_timeout", func(c Config) any { return c.APIBodyTimeout }},
		{"max_frame_size", func(c Config) any { return c.MaxFrameSize }},
		{"max_connect_size", func(c Config) any { return c.MaxConnectSize }},
		{"max_payload", func(c Config) any { return c.MaxPayload }},
		{"outbound_limit", func(c Config) any { return c.OutboundLimit }},
		{"max_recipients", func(c Config) any { return c.MaxRecipients }},
		{"duplicate_login", func(c Config) any { return c.DuplicateLogin }},
		{"fanout_workers", func(c Config) any { return c.FanoutWorkers }},
		{"gc_percent", func(c Config) any { return c.GCPercent }},
		{"pprof_addr", func(c Config) any { return c.PprofAddr }},
		{"store", func(c Config) any { return c.Store }},
		{"store_sync", func(c Config) any { return c.StoreSync }},
		{"message_ttl", func(c Config) any { return c.MessageTTL }},
		{"max_redeliveries", func(c Config) any { return c.MaxRedeliveries }},
		{"history_size", func(c Config) any { return c.HistorySize }},
		{"history_ttl", func(c Config) any { return c.HistoryTTL }},
		{"cluster", func(c Config) any { return c.Cluster }},
		{"protection", func(c Config) any { return c.Protection }},
		// The node counts connections per app against limits it read at
		// start; the API's rates (api_rate, publish_rate) reload.
		{"apps[].limits.max_connections", func(c Config) any {
			m := map[string]int{}
			for _, a := range c.Apps {
				if a.Limits.MaxConnections > 0 {
					m[a.ID] = a.Limits.MaxConnections
				}
			}
			return m
		}},
		{"log.format", func(c Config) any { return c.Log.Format }},
		{"log.buffer", func(c Config) any { return c.Log.Buffer }},
	}
}

// FixedChanges returns one error for each setting that differs between
// old and new but cannot change while the server runs (listener addresses,
// data_dir, store, cluster, node, ...), naming it and both values. Empty
// and nil lists are equal.
func FixedChanges(old, new Config) []error {
	var errs []error
	for _, f := range fixedSettings() {
		a, b := f.get(old), f.get(new)
		if equalSetting(a, b) {
			continue
		}
		errs = append(errs, fmt.Errorf("%s: cannot change while the server runs (from %v to %v); restart the server to change it", f.name, a, b))
	}
	return errs
}

// equalSetting compares two setting values, an empty list equal to nil.
func equalSetting(a, b any) bool {
	if x, ok := a.([]string); ok {
		y, _ := b.([]string)
		return slices.Equal(x, y)
	}
	return reflect.DeepEqual(a, b)
}
