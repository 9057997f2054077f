package server

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/herald-push/herald/internal/admin"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/metrics"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/protocol"
)

// adminBackend is the server as the admin API sees it.
type adminBackend struct{ s *Server }

var _ admin.Backend = adminBackend{}

func (b adminBackend) Tokens() []string { return b.s.Config().Admin.Tokens }

func (b adminBackend) Status(ctx context.Context) admin.Status {
	s := b.s
	st := admin.Status{Node: s.cfg.Node, Version: s.version, Started: s.started.UnixMilli(), Healthy: true, Draining: s.draining.Load()}
	if err := s.health(); err != nil {
		st.Healthy = false
		for _, e := range flattenErrors(err) {
			st.Problems = append(st.Problems, e.Error())
		}
	}
	if st.Draining {
		st.Healthy = false
		st.Problems = append(st.Problems, "draining: this node takes no new connections")
	}
	if s.broker != nil {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if v, err := s.cluster(ctx); err == nil {
			st.Cluster = v
		} else {
			st.Problems = append(st.Problems, "cluster view: "+err.Error())
		}
	}
	for _, a := range s.Config().Apps {
		st.Apps = append(st.Apps, a.ID)
	}
	return st
}

func (b adminBackend) Counters() admin.Counters { return b.s.adminCounters() }

func (b adminBackend) Connections(app, user string, limit int) []admin.Connection {
	var out []admin.Connection
	for r := range b.s.node.Sessions {
		if (app != "" && r.App != app) || (user != "" && r.User != user) {
			continue
		}
		out = append(out, admin.Connection{ID: r.ConnID, App: r.App, User: r.User, Device: r.Device,
			Transport: r.Transport, Remote: r.Remote, Since: r.Since.UnixMilli()})
		if len(out) >= limit {
			break
		}
	}
	slices.SortFunc(out, func(a, b admin.Connection) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func (b adminBackend) Apps() []admin.App {
	conns := b.s.node.AppConnections()
	var out []admin.App
	for _, a := range b.s.Config().Apps {
		app := admin.App{ID: a.ID, Connections: conns[a.ID], Limits: a.Limits, APIKeys: len(a.APIKeys), Switches: []string{}}
		for i, name := range switches.Names() {
			if b.s.switches.On(switches.Switch(i), a.ID) {
				app.Switches = append(app.Switches, name)
			}
		}
		out = append(out, app)
	}
	return out
}

// adminLimits is GET /admin/v1/limits.
type adminLimits struct {
	Connection map[string]int     `json:"connection"`
	Protection config.Protection  `json:"protection"`
	Apps       map[string]any     `json:"apps"`
	Sizes      map[string]int     `json:"sizes"`
	Timeouts   map[string]float64 `json:"timeouts_s"`
}

func (b adminBackend) Limits() any {
	c := b.s.Config()
	out := adminLimits{
		Connection: map[string]int{"frame_rate": c.FrameRate, "frame_burst": c.FrameBurst, "subscribe_rate": c.SubscribeRate,
			"subscribe_burst": c.SubscribeBurst, "replay_rate": c.ReplayRate, "replay_burst": c.ReplayBurst, "max_subscriptions": c.MaxSubscriptions},
		Protection: c.Protection,
		Apps:       map[string]any{},
		Sizes: map[string]int{"max_frame_size": c.MaxFrameSize, "max_payload": c.MaxPayload, "max_connect_size": c.MaxConnectSize,
			"outbound_limit": c.OutboundLimit, "max_recipients": c.MaxRecipients},
		Timeouts: map[string]float64{"heartbeat": c.Heartbeat.Seconds(), "heartbeat_grace": c.HeartbeatGrace.Seconds(),
			"auth_timeout": c.AuthTimeout.Seconds(), "api_body_timeout": c.APIBodyTimeout.Seconds()},
	}
	for _, a := range c.Apps {
		out.Apps[a.ID] = a.Limits
	}
	return out
}

func (b adminBackend) Switches() admin.SwitchList {
	l := admin.SwitchList{Names: switches.Names(), Apps: []string{}}
	for _, a := range b.s.Config().Apps {
		l.Apps = append(l.Apps, a.ID)
	}
	in := b.s.switches.InForce()
	if in == nil {
		in = []switches.State{}
	}
	l.Switches = in
	return l
}

func (b adminBackend) FlipSwitch(name, app string, on bool) error {
	return b.s.FlipSwitch(name, app, on)
}

func (b adminBackend) Drain(on bool) { b.s.Drain(on) }

func (b adminBackend) Reload() ([]string, time.Duration, error) {
	res, err := b.s.ReloadFromSource()
	return res.Changed, res.Took, err
}

// healthz is /healthz: red while a role fails or the node drains.
func (s *Server) healthz() error {
	if s.draining.Load() {
		return errors.Join(errors.New("draining: this node takes no new connections"), s.health())
	}
	return s.health()
}

// Drain starts or stops draining: while draining, the node refuses new
// connections (503 draining; TCP closed), /healthz is red so that load
// balancers and the dispatcher send clients elsewhere, and the node's
// connections are asked to reconnect (DISCONNECT shutdown), a share at a
// time, over about drainSpread. Stopping the drain admits connections
// again; those already closed reconnect wherever they are sent.
func (s *Server) Drain(on bool) {
	if s.draining.Swap(on) == on {
		return
	}
	s.applyRefusal()
	if !on {
		s.log.Warn("drain stopped: taking new connections again")
		return
	}
	s.log.Warn("draining: refusing new connections and asking open ones to reconnect elsewhere", "spread", drainSpread)
	go s.drainConnections(s.drainGen.Add(1))
}

// drainSpread is how long a drain takes to ask every connection to leave,
// so that the rest of the cluster is not hit by all of them at once.
const drainSpread = 10 * time.Second

// drainConnections closes this node's sessions a tenth at a time over
// drainSpread, until the drain stops (or another one, gen+1, starts).
func (s *Server) drainConnections(gen uint64) {
	const steps = 10
	tick := time.NewTicker(drainSpread / steps)
	defer tick.Stop()
	for i := range steps {
		var all []registry.Session
		for r := range s.node.Sessions {
			all = append(all, *r)
		}
		n := min((len(all)+steps-1-i)/(steps-i), len(all)) // the rest spread over the steps left
		for _, r := range all[:n] {
			if !s.draining.Load() || s.drainGen.Load() != gen {
				return
			}
			s.node.CloseConn(r.App, r.User, r.ConnID, protocol.NewDisconnect(protocol.DisconnectShutdown))
		}
		s.log.Info("draining", "closed", n, "left", len(all)-n)
		select {
		case <-tick.C:
		case <-s.drainStop:
			return
		}
	}
}

// adminCounters reads the counters the dashboard's sampler turns into
// rates.
func (s *Server) adminCounters() admin.Counters {
	g := s.gw.Stats()
	h := s.hub.Stats()
	n := s.node.Stats()
	c := admin.Counters{
		Time: time.Now(), Node: s.cfg.Node, Connections: g.Open, Accepted: g.Accepted,
		Disconnects: map[string]uint64{}, Refused: map[string]uint64{},
		Deliveries: h.Delivered,
		Queues: map[string]int64{
			"reads_queued":   int64(s.node.ReadsQueued()),
			"fanout_waiting": int64(s.hub.PartsWaiting()),
		},
		Events: map[string]uint64{
			"fanout_overflows": h.Dropped,
			"gaps_filled":      h.Filled,
			"held_paused":      n.Degrade.Held,
			"unrecovered":      n.Unrecovered,
			"undeliverable":    n.Undeliverable,
		},
		StoreHealthy: true, Draining: s.draining.Load(), Switches: s.switches.InForce(),
		Apps: map[string]admin.AppCounters{},
	}
	if c.Switches == nil {
		c.Switches = []switches.State{}
	}
	for code, v := range g.Disconnects {
		if v > 0 {
			c.Disconnects[code.String()] = v
		}
	}
	for r, v := range g.Refused {
		c.Refused[r] = v
	}
	c.Refused["app_limit"] += n.AppLimitRefused
	c.Refused["switched_off"] += n.Degrade.Refused
	if err := s.store.Health(); err != nil {
		c.StoreHealthy, c.StoreError = false, err.Error()
	}
	if s.broker != nil {
		ch := &admin.ClusterHealth{BrokerHealthy: s.broker.Health() == nil, RegistryHealthy: s.reg.Health() == nil}
		if v, ok := s.clusterNodes.Load().(int); ok {
			ch.Nodes = v
		}
		c.Cluster = ch
	}
	// Delivery latency over the last interval: the sampler is the only
	// caller, once a second.
	snap := s.apps.Snapshot()
	lat := metrics.Latency(snap)
	s.latMu.Lock()
	d := lat.Sub(s.prevLat)
	s.prevLat = lat
	s.latMu.Unlock()
	quantiles := func(app string) *admin.Quantiles {
		p50, ok := d.Quantile(app, .5)
		if !ok {
			return nil
		}
		p99, _ := d.Quantile(app, .99)
		return &admin.Quantiles{P50: p50 * 1000, P99: p99 * 1000}
	}
	c.Latency = quantiles("")
	open := s.node.AppConnections()
	for app, ac := range metrics.Counters(snap) {
		c.APIRequests += ac.APIRequests
		c.APIErrors += ac.APIErrors + ac.RateLimited
		c.Published += ac.Accepted
		c.Apps[app] = admin.AppCounters{Connections: open[app], APIRequests: ac.APIRequests, APIErrors: ac.APIErrors + ac.RateLimited,
			RateLimited: ac.RateLimited, Published: ac.Accepted, Deliveries: ac.Deliveries, Latency: quantiles(app)}
	}
	for _, a := range s.Config().Apps {
		if _, ok := c.Apps[a.ID]; !ok {
			c.Apps[a.ID] = admin.AppCounters{Connections: open[a.ID]}
		}
	}
	return c
}
