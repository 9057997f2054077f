// Package switches holds the degrade switches: settings an operator turns
// on during an incident to shed work (pause an app's deliveries, turn
// history, recovery, presence or unread counts off, refuse new
// connections), for the whole node or for one app, without a restart.
//
// A switch is on where the configuration says so (switches and
// apps[].switches, applied again at each reload) unless an operator
// overrode it at run time (the admin API); an override that agrees with
// the configuration is dropped, so flipping a switch back always returns
// to the configuration's word. Readers ask On on hot paths: one atomic
// load and, only while some switch is on, a map lookup.
package switches

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Switch is one degrade switch.
type Switch uint8

// The switches. Each is "on" when the server degrades.
const (
	// Pause holds the live delivery of an app's pushes, publishes and
	// broadcasts: they are accepted and stored as usual, and reach
	// connected clients when the switch is turned off (the hub reads
	// what it held back from the store). Publishes that would not be
	// stored (history off) are refused with 503 while paused.
	Pause Switch = iota
	// HistoryOff stops storing topic and broadcast messages: they are
	// delivered live only, and recoveries that could have missed one
	// are answered "cannot recover".
	HistoryOff
	// RecoveryOff answers every topic and broadcast recovery "cannot
	// recover" without reading the history.
	RecoveryOff
	// PresenceOff refuses presence queries (503).
	PresenceOff
	// UnreadOff refuses unread-count queries (503).
	UnreadOff
	// RejectConnections refuses new client connections (global: at
	// accept; per app: at CONNECT). Open connections are kept.
	RejectConnections
	count
)

var names = [count]string{"pause", "history_off", "recovery_off", "presence_off", "unread_off", "reject_connections"}

// String returns the switch's name as written in the configuration.
func (s Switch) String() string {
	if s < count {
		return names[s]
	}
	return fmt.Sprintf("switch(%d)", uint8(s))
}

// Names lists every switch's name, in a fixed order.
func Names() []string { return slices.Clone(names[:]) }

// Parse returns the switch named name.
func Parse(name string) (Switch, error) {
	for i, n := range names {
		if n == name {
			return Switch(i), nil
		}
	}
	return 0, fmt.Errorf("unknown switch %q (known: %s)", name, strings.Join(names[:], ", "))
}

// Source says who turned a switch on.
const (
	SourceConfig = "config"
	SourceAdmin  = "admin"
)

// State is a switch in force (or an override), as shown to operators.
type State struct {
	Name   string    `json:"name"`
	App    string    `json:"app"` // "" for the whole node
	On     bool      `json:"on"`
	Source string    `json:"source"` // SourceConfig or SourceAdmin
	Since  time.Time `json:"-"`
	// SinceMilli is Since in unix milliseconds (JSON "since").
	SinceMilli int64 `json:"since"`
}

// key is a switch of the node (app "") or of an app.
type key struct {
	sw  Switch
	app string
}

// mark is a switch's word: on or off, from whom, since when.
type mark struct {
	on     bool
	source string
	since  time.Time
}

// table is an immutable snapshot of the switches in force.
type table struct {
	any    bool
	global [count]bool
	apps   map[string]*[count]bool
}

// Change is a switch that went on or off, as Set reports it to Watch.
type Change struct {
	Switch Switch
	App    string // "" for the whole node
	On     bool
	Source string
}

// Set is the node's switches. It is safe for concurrent use.
type Set struct {
	cur atomic.Pointer[table]

	mu        sync.Mutex
	config    map[key]time.Time // on by configuration, since
	overrides map[key]mark      // set by operators
	watchers  []func(Change)
	flips     [count]atomic.Uint64
	now       func() time.Time
}

// New returns a set with every switch off. now may be nil (time.Now).
func New(now func() time.Time) *Set {
	if now == nil {
		now = time.Now
	}
	s := &Set{config: map[key]time.Time{}, overrides: map[key]mark{}, now: now}
	s.cur.Store(&table{})
	return s
}

// On reports whether sw is on for app: on for the node, or for app.
func (s *Set) On(sw Switch, app string) bool {
	t := s.cur.Load()
	if !t.any {
		return false
	}
	if t.global[sw] {
		return true
	}
	if a := t.apps[app]; a != nil {
		return a[sw]
	}
	return false
}

// OnGlobally reports whether sw is on for the whole node.
func (s *Set) OnGlobally(sw Switch) bool { return s.cur.Load().global[sw] }

// Watch registers f, called (outside the set's lock, in order) for each
// switch whose effective state changes.
func (s *Set) Watch(f func(Change)) {
	s.mu.Lock()
	s.watchers = append(s.watchers, f)
	s.mu.Unlock()
}

// Configure sets what the configuration turns on: global for the node,
// apps per app id. It returns the changes it made.
func (s *Set) Configure(global []Switch, apps map[string][]Switch) []Change {
	s.mu.Lock()
	now := s.now()
	next := map[key]time.Time{}
	for _, sw := range global {
		next[key{sw, ""}] = now
	}
	for app, l := range apps {
		for _, sw := range l {
			next[key{sw, app}] = now
		}
	}
	for k := range next {
		if t, ok := s.config[k]; ok {
			next[k] = t // on before: keeps its time
		}
	}
	before := s.effective()
	s.config = next
	// An override that now agrees with the configuration has done its
	// work.
	for k, m := range s.overrides {
		if _, on := next[k]; on == m.on {
			delete(s.overrides, k)
		}
	}
	return s.publish(before, SourceConfig)
}

// Flip sets sw for app ("" for the node) on or off at run time, over what
// the configuration says, until flipped back (or the configuration comes
// to agree). It returns whether the switch's state changed.
func (s *Set) Flip(sw Switch, app string, on bool) bool {
	if sw >= count {
		return false
	}
	s.mu.Lock()
	before := s.effective()
	k := key{sw, app}
	_, byConfig := s.config[k]
	if on == byConfig {
		delete(s.overrides, k)
	} else if m, ok := s.overrides[k]; !ok || m.on != on {
		s.overrides[k] = mark{on: on, source: SourceAdmin, since: s.now()}
	}
	changes := s.publish(before, SourceAdmin)
	return len(changes) > 0
}

// Flips returns how many times each switch went on or off, by name.
func (s *Set) Flips() map[string]uint64 {
	out := make(map[string]uint64, count)
	for i := range count {
		out[names[i]] = s.flips[i].Load()
	}
	return out
}

// InForce lists the switches that are on, node-wide ones first, then by
// app and name.
func (s *Set) InForce() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []State
	for k, m := range s.effective() {
		if m.on {
			out = append(out, State{Name: names[k.sw], App: k.app, On: true, Source: m.source, Since: m.since, SinceMilli: m.since.UnixMilli()})
		}
	}
	sortStates(out)
	return out
}

// Overrides lists the operators' overrides, on and off (what
// RestoreStates takes back after a restart).
func (s *Set) Overrides() []State {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]State, 0, len(s.overrides))
	for k, m := range s.overrides {
		out = append(out, State{Name: names[k.sw], App: k.app, On: m.on, Source: m.source, Since: m.since, SinceMilli: m.since.UnixMilli()})
	}
	sortStates(out)
	return out
}

// RestoreStates applies saved overrides (a Store's Load), over the
// configuration, at start before the server takes traffic. Unknown switch
// names are an error; nothing is applied then.
func (s *Set) RestoreStates(saved []State) error {
	type one struct {
		k key
		m mark
	}
	all := make([]one, 0, len(saved))
	for _, st := range saved {
		sw, err := Parse(st.Name)
		if err != nil {
			return fmt.Errorf("saved switches: %w", err)
		}
		all = append(all, one{key{sw, st.App}, mark{on: st.On, source: SourceAdmin, since: time.UnixMilli(st.SinceMilli)}})
	}
	s.mu.Lock()
	before := s.effective()
	for _, o := range all {
		if _, byConfig := s.config[o.k]; byConfig != o.m.on {
			s.overrides[o.k] = o.m
		}
	}
	s.publish(before, SourceAdmin)
	return nil
}

// effective is each switch's word (config, then overrides). s.mu held.
func (s *Set) effective() map[key]mark {
	out := make(map[key]mark, len(s.config)+len(s.overrides))
	for k, t := range s.config {
		out[k] = mark{on: true, source: SourceConfig, since: t}
	}
	for k, m := range s.overrides {
		out[k] = m
	}
	return out
}

// publish installs the table of the effective switches, counts and
// reports the changes from before, and unlocks s.mu.
func (s *Set) publish(before map[key]mark, source string) []Change {
	after := s.effective()
	t := &table{apps: map[string]*[count]bool{}}
	for k, m := range after {
		if !m.on {
			continue
		}
		t.any = true
		if k.app == "" {
			t.global[k.sw] = true
			continue
		}
		a := t.apps[k.app]
		if a == nil {
			a = new([count]bool)
			t.apps[k.app] = a
		}
		a[k.sw] = true
	}
	s.cur.Store(t)
	var changes []Change
	for k, m := range after {
		if before[k].on != m.on {
			changes = append(changes, Change{Switch: k.sw, App: k.app, On: m.on, Source: source})
		}
	}
	for k, m := range before {
		if _, ok := after[k]; !ok && m.on {
			changes = append(changes, Change{Switch: k.sw, App: k.app, On: false, Source: source})
		}
	}
	sort.Slice(changes, func(i, j int) bool {
		if changes[i].App != changes[j].App {
			return changes[i].App < changes[j].App
		}
		return changes[i].Switch < changes[j].Switch
	})
	for _, c := range changes {
		s.flips[c.Switch].Add(1)
	}
	watchers := slices.Clone(s.watchers)
	s.mu.Unlock()
	for _, c := range changes {
		for _, w := range watchers {
			w(c)
		}
	}
	return changes
}

func sortStates(l []State) {
	sort.Slice(l, func(i, j int) bool {
		if l[i].App != l[j].App {
			return l[i].App < l[j].App
		}
		return l[i].Name < l[j].Name
	})
}
