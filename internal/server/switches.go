package server

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/herald-push/herald/internal/admin"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/metrics"
	"github.com/herald-push/herald/internal/switches"
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
// saved in data_dir.
func openSwitches(cfg config.Config, opt Options) (*switches.Set, error) {
	sw := switches.New(opt.Now)
	sw.Configure(configuredSwitches(cfg))
	data, err := os.ReadFile(filepath.Join(cfg.DataDir, switchesFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read degrade switches: %w", err)
	default:
		if err := sw.Restore(data); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(cfg.DataDir, switchesFile), err)
		}
	}
	return sw, nil
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

// flipLocal flips a switch on this node and saves the overrides.
func (s *Server) flipLocal(sw switches.Switch, app string, on bool) error {
	s.switchMu.Lock()
	defer s.switchMu.Unlock()
	s.switches.Flip(sw, app, on)
	data, err := s.switches.MarshalOverrides()
	if err == nil {
		err = writeFileAtomic(filepath.Join(s.cfg.DataDir, switchesFile), data)
	}
	if err != nil {
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

// writeFileAtomic writes data to path through a synced temporary file and
// a rename.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".switches-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
