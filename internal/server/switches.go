package server

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/herald-push/herald/internal/admin"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/metrics"
	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/internal/switches/redisswitches"
)

// switchesFile keeps the operators' switch overrides across restarts, in
// data_dir.
const switchesFile = "switches.json"

// configuredSwitches parses the switches a configuration turns on
// (validated before).
func configuredSwitches(cfg config.Config) ([]switches.Switch, map[string][]switches.Switch) {
	parse := func(names []string) []switches.Switch {
		var out []switches.Switch
		for _, n := range names {
			if sw, err := switches.Parse(n); err == nil {
				out = append(out, sw)
			}
		}
		return out
	}
	apps := map[string][]switches.Switch{}
	for _, a := range cfg.Apps {
		if len(a.Switches) > 0 {
			apps[a.ID] = parse(a.Switches)
		}
	}
	return parse(cfg.Switches), apps
}

// openSwitches builds the node's switches from cfg and the overrides
// saved: in data_dir on a node alone, in Redis (every node's) in a
// cluster. The store is returned for FlipSwitch to save to, and to close.
func openSwitches(cfg config.Config, opt Options) (*switches.Set, switches.Store, error) {
	var st switches.Store
	if cfg.Cluster.Enabled() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rs, err := redisswitches.Open(ctx, redisswitches.Options{Addr: cfg.Cluster.Redis, Key: cfg.Cluster.Prefix + ":switches"})
		if err != nil {
			return nil, nil, err
		}
		st = rs
	} else {
		st = switches.NewFileStore(filepath.Join(cfg.DataDir, switchesFile))
	}
	sw := switches.New(opt.Now)
	sw.Configure(configuredSwitches(cfg))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	saved, err := st.Load(ctx)
	if err == nil {
		err = sw.RestoreStates(saved)
	}
	if err != nil {
		closeSwitchStore(st)
		return nil, nil, fmt.Errorf("degrade switches saved by operators: %w", err)
	}
	return sw, st, nil
}

// closeSwitchStore closes a switch store that holds a connection.
func closeSwitchStore(st switches.Store) {
	if c, ok := st.(io.Closer); ok {
		_ = c.Close()
	}
}

// watchSwitches logs every switch change and applies the node-wide
// refusal of new connections at the gateway.
func (s *Server) watchSwitches(c switches.Change) {
	if c.On {
		s.log.Warn("degrade switch on", "switch", c.Switch.String(), "app", c.App, "source", c.Source)
	} else {
		s.log.Info("degrade switch off", "switch", c.Switch.String(), "app", c.App, "source", c.Source)
	}
	if c.Switch == switches.RejectConnections && c.App == "" {
		s.applyRefusal()
	}
}

// applyRefusal sets the gateway's refusal of new connections from the
// drain state and the node-wide reject_connections switch.
func (s *Server) applyRefusal() {
	s.refuseMu.Lock()
	defer s.refuseMu.Unlock()
	reason := ""
	switch {
	case s.draining.Load():
		reason = gateway.RefusedDraining
	case s.switches.OnGlobally(switches.RejectConnections):
		reason = gateway.RefusedSwitchedOff
	}
	_ = s.gw.RefuseNew(reason) // a known reason
}

// Switches returns the node's degrade switches.
func (s *Server) Switches() *switches.Set { return s.switches }

// FlipSwitch turns a degrade switch on or off at run time (for app, or
// the whole node when app is ""), over the configuration, and saves the
// operators' overrides in data_dir so that a restart keeps them. On a node
// of a cluster it tells the other nodes, which flip theirs.
func (s *Server) FlipSwitch(name, app string, on bool) error {
	sw, err := switches.Parse(name)
	if err != nil {
		return err
	}
	if app != "" && !s.hasApp(app) {
		return fmt.Errorf("unknown app %q", app)
	}
	if err := s.flipLocal(sw, app, on); err != nil {
		return err
	}
	if err := s.tellNodes(sw, app, on); err != nil {
		s.log.Error("degrade switch in force on this node only", "switch", name, "app", app, "err", err)
		return fmt.Errorf("%w: %v", admin.ErrNotPropagated, err)
	}
	return nil
}

// flipLocal flips a switch on this node and saves the override (in the
// cluster's Redis, for every node, or in data_dir).
func (s *Server) flipLocal(sw switches.Switch, app string, on bool) error {
	s.switchMu.Lock()
	defer s.switchMu.Unlock()
	s.switches.Flip(sw, app, on)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.switches.Save(ctx, s.switchStore, sw, app); err != nil {
		// In force on this node, but a restart would forget it.
		s.log.Error("degrade switch not saved: a restart would not keep it", "switch", sw.String(), "app", app, "err", err)
		return fmt.Errorf("%w: %v", admin.ErrNotSaved, err)
	}
	return nil
}

// hasApp reports whether app is configured now.
func (s *Server) hasApp(app string) bool {
	for _, a := range s.Config().Apps {
		if a.ID == app {
			return true
		}
	}
	return false
}

// switchStats is the metrics' view of the switches.
func (s *Server) switchStats() metrics.SwitchStats {
	out := metrics.SwitchStats{Changes: s.switches.Flips()}
	for _, st := range s.switches.InForce() {
		out.InForce = append(out.InForce, [2]string{st.Name, st.App})
	}
	d := s.node.DegradeStats()
	out.Effects = map[string]uint64{"held": d.Held, "refused": d.Refused, "recovery_off": d.RecoveryOff, "queries_off": d.QueriesOff}
	return out
}
