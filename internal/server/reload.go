package server

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/logging"
	"github.com/herald-push/herald/internal/node"
)

// ErrReloadRefused marks an error of Reload: the new configuration was
// refused whole and the one in force is unchanged. The error joins every
// problem found, one per setting.
var ErrReloadRefused = errors.New("reload refused; the configuration in force is unchanged")

// RefusedError is the error of a refused Reload: every problem of the new
// configuration. errors.Is(err, ErrReloadRefused) holds for it.
type RefusedError struct {
	Problems []error // one per setting, each starting with its YAML path
}

// Error lists the problems, one a line, after ErrReloadRefused's text.
func (e *RefusedError) Error() string {
	var b strings.Builder
	b.WriteString(ErrReloadRefused.Error())
	for _, p := range e.Problems {
		b.WriteString("\n")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *RefusedError) Unwrap() []error { return e.Problems }

// Is reports whether target is ErrReloadRefused.
func (e *RefusedError) Is(target error) bool { return target == ErrReloadRefused }

// ReloadResult says what a Reload changed.
type ReloadResult struct {
	// Changed lists each change applied, one line each, such as
	// "apps: added chat" or "log.level: info -> debug". Empty when the
	// new configuration is the one in force.
	Changed []string
	// Took is how long the reload took, validation included.
	Took time.Duration
}

// Reload applies a new configuration to the running server without
// closing any connection. It first checks all of cfg (cfg.Validate, and
// that none of the settings that cannot change at run time differ from the
// configuration in force: listener addresses, data_dir, store, cluster,
// node, ...; see config.ReloadableSettings); if anything is wrong it
// changes nothing and returns an error wrapping ErrReloadRefused that
// lists every problem (a *RefusedError). Otherwise it replaces, each
// atomically, the apps, API keys and token secrets, the log level and the
// per-connection rate and subscription limits.
//
// Connections already open keep running, those of an app that was removed
// too: they were authenticated with a token valid then, and stay until
// they close or the server drops them (heartbeat, limits, kick). New
// connections and API calls of a removed app are refused. Reload is safe
// to call concurrently (calls are serialised) and while the server runs.
func (s *Server) Reload(cfg config.Config) (ReloadResult, error) {
	start := time.Now()
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.cur

	var problems []error
	if err := cfg.Validate(); err != nil {
		problems = append(problems, flattenErrors(err)...)
	}
	problems = append(problems, config.FixedChanges(old, cfg)...)
	if old.Log.Level != cfg.Log.Level && s.logLevel == nil {
		problems = append(problems, errors.New("log.level: this server was started without a changeable log level"))
	}
	if len(problems) > 0 {
		return ReloadResult{Took: time.Since(start)}, &RefusedError{Problems: problems}
	}
	// SetRates cannot fail on a validated configuration; were it to, the
	// configuration in force is still whole.
	frame := gateway.Rate{PerSecond: cfg.FrameRate, Burst: cfg.FrameBurst}
	sub := gateway.Rate{PerSecond: cfg.SubscribeRate, Burst: cfg.SubscribeBurst}
	if err := s.gw.SetRates(frame, sub); err != nil {
		return ReloadResult{Took: time.Since(start)}, &RefusedError{Problems: []error{err}}
	}
	s.node.SetTunables(node.Tunables{MaxSubscriptions: cfg.MaxSubscriptions, ReplayRate: cfg.ReplayRate, ReplayBurst: cfg.ReplayBurst})
	s.verifier.SetSecrets(cfg.AppSecretSets())
	// The API knows the old and new apps while the keys change, so that a
	// request never finds its key valid and its app unknown: an added app
	// is known before its keys work, a removed app's keys stop working
	// before it is forgotten.
	var ids, both []string
	for _, a := range cfg.Apps {
		ids = append(ids, a.ID)
	}
	both = append(both, ids...)
	for _, a := range old.Apps {
		both = append(both, a.ID)
	}
	s.apps.SetApps(ids)                  // labels first: an added app's first calls are counted
	s.api.SetLimits(apiLimits(cfg.Apps)) // an app whose limits did not change keeps its buckets
	s.api.SetApps(both)
	s.keys.Set(cfg.APIKeys())
	s.api.SetApps(ids)
	if s.logLevel != nil {
		lvl, _ := logging.ParseLevel(cfg.Log.Level) // validated
		s.logLevel.Set(lvl)
	}
	s.cur = cfg
	changed := describeChanges(old, cfg)
	for _, c := range s.switches.Configure(configuredSwitches(cfg)) {
		state, of := "off", "the whole node"
		if c.On {
			state = "on"
		}
		if c.App != "" {
			of = "app " + c.App
		}
		changed = append(changed, fmt.Sprintf("switches: %s %s for %s", c.Switch, state, of))
	}
	return ReloadResult{Changed: changed, Took: time.Since(start)}, nil
}

// ReloadFromSource reads the configuration again from where the process
// read it at start (Options.LoadConfig) and applies it with Reload: what
// SIGHUP and the admin API's reload do. A configuration that cannot be
// read or validated is refused whole like any other, its problems listed
// with the settings it would change that cannot change.
func (s *Server) ReloadFromSource() (ReloadResult, error) {
	start := time.Now()
	if s.loadConfig == nil {
		return ReloadResult{}, &RefusedError{Problems: []error{errors.New("this server was started without a configuration source to read again")}}
	}
	cfg, err := s.loadConfig()
	if err != nil {
		problems := flattenErrors(err)
		if cfg.Node != "" || cfg.DataDir != "" { // read, if not valid
			problems = append(problems, config.FixedChanges(s.Config(), cfg)...)
		}
		return ReloadResult{Took: time.Since(start)}, &RefusedError{Problems: problems}
	}
	res, err := s.Reload(cfg)
	res.Took = time.Since(start)
	return res, err
}

// Config returns the configuration in force: the one the server started
// with, or the last one Reload applied.
func (s *Server) Config() config.Config {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.cur
}

// describeChanges lists what differs between old and new in the settings
// Reload applies. Secrets and keys are never printed, only counted.
func describeChanges(old, new config.Config) []string {
	var out []string
	apps := func(c config.Config) map[string]config.App {
		m := make(map[string]config.App, len(c.Apps))
		for _, a := range c.Apps {
			m[a.ID] = a
		}
		return m
	}
	o, n := apps(old), apps(new)
	var added, removed, changed []string
	for id, a := range n {
		p, ok := o[id]
		switch {
		case !ok:
			added = append(added, id)
		case p.Secret != a.Secret || !slices.Equal(p.PreviousSecrets, a.PreviousSecrets) || !slices.Equal(p.APIKeys, a.APIKeys):
			var what []string
			if p.Secret != a.Secret {
				what = append(what, "secret")
			}
			if !slices.Equal(p.PreviousSecrets, a.PreviousSecrets) {
				what = append(what, fmt.Sprintf("previous_secrets (%d)", len(a.PreviousSecrets)))
			}
			if !slices.Equal(p.APIKeys, a.APIKeys) {
				what = append(what, fmt.Sprintf("api_keys (%d)", len(a.APIKeys)))
			}
			changed = append(changed, id+": "+strings.Join(what, ", "))
		}
	}
	for id := range o {
		if _, ok := n[id]; !ok {
			removed = append(removed, id)
		}
	}
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	if len(added) > 0 {
		out = append(out, "apps: added "+strings.Join(added, ", "))
	}
	if len(removed) > 0 {
		out = append(out, "apps: removed "+strings.Join(removed, ", ")+" (open connections kept; new ones and API keys refused)")
	}
	for _, c := range changed {
		out = append(out, "apps: changed "+c)
	}
	for _, f := range []struct {
		name     string
		old, new any
	}{
		{"log.level", old.Log.Level, new.Log.Level},
		{"frame_rate", old.FrameRate, new.FrameRate},
		{"frame_burst", old.FrameBurst, new.FrameBurst},
		{"subscribe_rate", old.SubscribeRate, new.SubscribeRate},
		{"subscribe_burst", old.SubscribeBurst, new.SubscribeBurst},
		{"replay_rate", old.ReplayRate, new.ReplayRate},
		{"replay_burst", old.ReplayBurst, new.ReplayBurst},
		{"max_subscriptions", old.MaxSubscriptions, new.MaxSubscriptions},
	} {
		if f.old != f.new {
			out = append(out, fmt.Sprintf("%s: %v -> %v", f.name, f.old, f.new))
		}
	}
	return out
}

// flattenErrors lists the leaves of joined errors.
func flattenErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	if err == nil {
		return nil
	}
	return []error{err}
}
