// Package registrytest is the conformance suite of registry.Registry.
// Every implementation runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		registrytest.Run(t, registrytest.Config{
//			NewCluster: func(t *testing.T) registrytest.NewNode {
//				return func(node registry.NodeInfo, load func() registry.Load) registry.Registry {
//					return registry.NewMemory(registry.MemoryOptions{Node: node, Load: load})
//				}
//			},
//		})
//	}
//
// A single-node implementation runs the single-node subset. A cluster
// implementation sets Cluster: the registries that one NewNode makes, with
// different node ids, are nodes of one cluster, and the suite checks what
// one node sees of another (claims across nodes, lookup across nodes, a
// dead node's sessions disappearing after its lease).
package registrytest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/registry"
)

// NewNode opens a registry for node, with load as its load callback (may
// be nil). Every registry that one NewNode opens belongs to one cluster,
// empty at first, that no other subtest sees.
type NewNode func(node registry.NodeInfo, load func() registry.Load) registry.Registry

// Config tells Run how to make registries and what to check.
type Config struct {
	// NewCluster returns the node constructor of a new, empty cluster. It
	// is called once per subtest; it cleans up after t (the suite closes
	// the registries itself, closing twice must be harmless).
	NewCluster func(t *testing.T) NewNode
	// Cluster says that registries of different node ids made by one
	// NewNode share their sessions. Without it, the suite opens one node
	// per subtest.
	Cluster bool
	// Kill, if set (with Cluster), stops r as a crash would: it neither
	// releases r's sessions nor tells the cluster, and r's lease is no
	// longer renewed. The dead-node tests need it.
	Kill func(t *testing.T, r registry.Registry)
	// Lease is the longest a killed or closed node may still be seen alive
	// (the lease, plus the renewal interval if a node notices a lost lease
	// only when it next renews). Polls wait for up to four times this plus
	// five seconds.
	Lease time.Duration
}

// Run runs the suite.
func Run(t *testing.T, cfg Config) {
	type test struct {
		name string
		fn   func(e *env)
	}
	tests := []test{
		{"ClaimReplaceRefuse", testClaimReplaceRefuse},
		{"ReleaseOnlyOwn", testReleaseOnlyOwn},
		{"LookupSortedFields", testLookupSortedFields},
		{"Count", testCount},
		{"NodesSelf", testNodesSelf},
		{"ConcurrentRefuse", testConcurrentRefuse},
		{"ConcurrentReplace", testConcurrentReplace},
		{"Contexts", testContexts},
		{"Closed", testClosed},
	}
	if cfg.Cluster {
		tests = append(tests,
			test{"LookupAcrossNodes", testLookupAcrossNodes},
			test{"DuplicateAcrossNodes", testDuplicateAcrossNodes},
			test{"CountPerNode", testCountPerNode},
			test{"NodesListing", testNodesListing},
		)
		if cfg.Kill != nil {
			tests = append(tests, test{"DeadNode", testDeadNode})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := &env{t: t, ctx: t.Context(), cfg: cfg, newNode: cfg.NewCluster(t)}
			tc.fn(e)
		})
	}
}

// env is one subtest's cluster.
type env struct {
	t       *testing.T
	ctx     context.Context
	cfg     Config
	newNode NewNode
}

// app is the app of every session of the suite; other is for isolation.
const (
	app   = "app"
	other = "other-app"
)

// since is a session's start: with nanoseconds and not UTC, so that
// registries are seen to keep the instant.
var since = time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))

// node opens node id with its addresses derived from the id.
func (e *env) node(id string) registry.Registry {
	return e.nodeWithLoad(id, nil)
}

func (e *env) nodeWithLoad(id string, load func() registry.Load) registry.Registry {
	e.t.Helper()
	r := e.newNode(info(id), load)
	e.t.Cleanup(func() { _ = r.Close() })
	return r
}

func info(id string) registry.NodeInfo {
	return registry.NodeInfo{ID: id, WSURL: "wss://" + id + ".example/ws", TCPAddr: id + ".example:8090"}
}

// sess returns a session of user's device on node with connection id conn.
func sess(node, user, device string, conn uint64) *registry.Session {
	return &registry.Session{App: app, User: user, Device: device, Node: node, ConnID: conn,
		Since: since.Add(time.Duration(conn) * time.Millisecond), Transport: "ws", Remote: fmt.Sprintf("192.0.2.%d:5000", conn%250)}
}

// claim claims s and fails the test on an error.
func (e *env) claim(r registry.Registry, s *registry.Session, replace bool) (registry.Session, bool) {
	e.t.Helper()
	prev, had, err := r.Claim(e.ctx, s, replace)
	if err != nil {
		e.t.Fatalf("Claim(%s, replace %v): %v", s.ID(), replace, err)
	}
	return prev, had
}

// refused claims s without replacing and wants ErrDuplicate with prev.
func (e *env) refused(r registry.Registry, s *registry.Session, prev *registry.Session) {
	e.t.Helper()
	got, had, err := r.Claim(e.ctx, s, false)
	if !errors.Is(err, registry.ErrDuplicate) {
		e.t.Fatalf("Claim(%s, refuse): err %v; want ErrDuplicate", s.ID(), err)
	}
	if !had || got.ID() != prev.ID() {
		e.t.Fatalf("Claim(%s, refuse): prev %s (had %v); want %s", s.ID(), got.ID(), had, prev.ID())
	}
	sameSession(e.t, got, *prev)
}

func (e *env) release(r registry.Registry, s *registry.Session) {
	e.t.Helper()
	if err := r.Release(e.ctx, s); err != nil {
		e.t.Fatalf("Release(%s): %v", s.ID(), err)
	}
}

func (e *env) lookup(r registry.Registry, user string) []registry.Session {
	e.t.Helper()
	got, err := r.Lookup(e.ctx, app, user)
	if err != nil {
		e.t.Fatalf("Lookup(%q): %v", user, err)
	}
	return got
}

// ids renders sessions as "device=id" for messages and comparisons.
func ids(list []registry.Session) string {
	parts := make([]string, len(list))
	for i := range list {
		parts[i] = list[i].Device + "=" + list[i].ID()
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// wantLookup checks that r sees exactly want for user, in this order,
// with every field.
func (e *env) wantLookup(r registry.Registry, user string, want ...*registry.Session) {
	e.t.Helper()
	got := e.lookup(r, user)
	w := make([]registry.Session, len(want))
	for i := range want {
		w[i] = *want[i]
	}
	if ids(got) != ids(w) {
		e.t.Fatalf("Lookup(%q) = %s; want %s", user, ids(got), ids(w))
	}
	for i := range got {
		sameSession(e.t, got[i], w[i])
	}
}

// sameSession checks every field of got against want.
func sameSession(t *testing.T, got, want registry.Session) {
	t.Helper()
	if got.App != want.App || got.User != want.User || got.Device != want.Device || got.Node != want.Node ||
		got.ConnID != want.ConnID || !got.Since.Equal(want.Since) || got.Transport != want.Transport || got.Remote != want.Remote {
		t.Fatalf("session %+v; want %+v", got, want)
	}
}

// waitFor polls cond until it returns nil, failing the test after the
// suite's deadline. It is for lease expiry and background work, whose
// moment the test cannot know.
func (e *env) waitFor(what string, cond func() error) {
	e.t.Helper()
	deadline := time.Now().Add(4*e.cfg.Lease + 5*time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("waiting for %s: %v", what, err)
		}
		select {
		case <-e.ctx.Done():
			e.t.Fatalf("waiting for %s: %v", what, e.ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func testClaimReplaceRefuse(e *env) {
	r := e.node("n1")
	a := sess("n1", "u", "d", 1)
	if prev, had := e.claim(r, a, false); had || prev != (registry.Session{}) {
		e.t.Fatalf("first claim: prev %+v had %v", prev, had)
	}
	b := sess("n1", "u", "d", 2)
	e.refused(r, b, a)
	e.wantLookup(r, "u", a) // the refused one left nothing
	prev, had := e.claim(r, b, true)
	if !had {
		e.t.Fatal("replace: no previous session reported")
	}
	sameSession(e.t, prev, *a)
	e.wantLookup(r, "u", b)
	// The same device of another user, and of another app, are other slots.
	c := sess("n1", "v", "d", 3)
	if _, had := e.claim(r, c, false); had {
		e.t.Fatal("another user's device reported as a duplicate")
	}
	d := sess("n1", "u", "d", 4)
	d.App = other
	if _, had := e.claim(r, d, false); had {
		e.t.Fatal("another app's user reported as a duplicate")
	}
	e.refused(r, sess("n1", "u", "d", 5), b)
}

func testReleaseOnlyOwn(e *env) {
	r := e.node("n1")
	a, b := sess("n1", "u", "d", 1), sess("n1", "u", "d", 2)
	e.claim(r, a, true)
	e.claim(r, b, true)
	e.release(r, a) // replaced: must not remove b
	e.wantLookup(r, "u", b)
	e.release(r, b)
	e.wantLookup(r, "u")
	// A session that was never claimed is not released in its device's
	// place either.
	c := sess("n1", "u", "d", 3)
	e.claim(r, c, false)
	e.release(r, sess("n1", "u", "d", 4))
	e.wantLookup(r, "u", c)
	e.release(r, c)
	e.wantLookup(r, "u")
	// The device is free again, even in refuse mode.
	if _, had := e.claim(r, sess("n1", "u", "d", 5), false); had {
		e.t.Fatal("released device reported as a duplicate")
	}
}

func testLookupSortedFields(e *env) {
	r := e.node("n1")
	devices := []string{"phone", "desk", "tablet", "a-watch", "zz"}
	var want []*registry.Session
	for i, d := range devices {
		s := sess("n1", "alice", d, uint64(10+i))
		e.claim(r, s, false)
		want = append(want, s)
	}
	slices.SortFunc(want, func(a, b *registry.Session) int { return strings.Compare(a.Device, b.Device) })
	e.wantLookup(r, "alice", want...)
	if got, err := r.Lookup(e.ctx, other, "alice"); err != nil || len(got) != 0 {
		e.t.Fatalf("another app's alice: %v, %v; want none", ids(got), err)
	}
	if got := e.lookup(r, "nobody"); len(got) != 0 {
		e.t.Fatalf("unknown user: %s", ids(got))
	}
	// Names with characters a key layout might split on (names have no
	// spaces).
	odd := sess("n1", "u:1é/x{}", "dev:0*", 99)
	e.claim(r, odd, false)
	e.wantLookup(r, odd.User, odd)
	e.wantLookup(r, "u:1")
}

func testCount(e *env) {
	r := e.node("n1")
	if n := r.Count(); n != 0 {
		e.t.Fatalf("empty registry: Count %d", n)
	}
	a, b, c := sess("n1", "u", "d1", 1), sess("n1", "u", "d2", 2), sess("n1", "v", "d1", 3)
	for _, s := range []*registry.Session{a, b, c} {
		e.claim(r, s, false)
	}
	if n := r.Count(); n != 3 {
		e.t.Fatalf("three sessions: Count %d", n)
	}
	e.refused(r, sess("n1", "u", "d1", 4), a)
	if n := r.Count(); n != 3 {
		e.t.Fatalf("after a refused claim: Count %d; want 3", n)
	}
	a2 := sess("n1", "u", "d1", 5)
	e.claim(r, a2, true)
	e.release(r, a) // the replaced session's release, as the node does when it closes it
	if n := r.Count(); n != 3 {
		e.t.Fatalf("after a replacement and the old session's release: Count %d; want 3", n)
	}
	for _, s := range []*registry.Session{a2, b, c} {
		e.release(r, s)
	}
	if n := r.Count(); n != 0 {
		e.t.Fatalf("all released: Count %d", n)
	}
}

func testNodesSelf(e *env) {
	before := time.Now()
	load := registry.Load{Connections: 7, CPU: 0.25, Memory: 1 << 20}
	r := e.nodeWithLoad("n1", func() registry.Load { return load })
	e.claim(r, sess("n1", "u", "d", 1), false)
	e.claim(r, sess("n1", "u", "e", 2), false)
	// A cluster node reports at its lease renewals: poll.
	e.waitFor("this node with 2 sessions in Nodes", func() error {
		nodes, err := r.Nodes(e.ctx)
		if err != nil {
			return err
		}
		if len(nodes) != 1 {
			return fmt.Errorf("nodes %+v; want one", nodes)
		}
		n := nodes[0]
		w := info("n1")
		if n.ID != w.ID || n.WSURL != w.WSURL || n.TCPAddr != w.TCPAddr {
			e.t.Fatalf("node %+v; want the addresses of %+v", n, w)
		}
		if n.Load != load {
			e.t.Fatalf("node load %+v; want %+v", n.Load, load)
		}
		if n.Started.Before(before.Add(-time.Second)) || n.Started.After(time.Now().Add(time.Second)) {
			e.t.Fatalf("node started %v; opened at %v", n.Started, before)
		}
		if n.Seen.Before(n.Started) || n.Seen.After(time.Now().Add(time.Second)) {
			e.t.Fatalf("node seen %v, started %v", n.Seen, n.Started)
		}
		if n.Sessions != 2 {
			return fmt.Errorf("node reports %d sessions", n.Sessions)
		}
		return nil
	})
}

// testConcurrentRefuse: many goroutines claim one device at once without
// replacing, round after round: exactly one wins each round, and every
// other is told the winner.
func testConcurrentRefuse(e *env) {
	nodes := e.nodes()
	const rounds, racers = 10, 12
	for round := range rounds {
		var wg sync.WaitGroup
		sessions := make([]*registry.Session, racers)
		errs := make([]error, racers)
		prevs := make([]registry.Session, racers)
		for i := range racers {
			r := nodes[i%len(nodes)]
			sessions[i] = sess(nodeID(i%len(nodes)), "u", "d", uint64(round*racers+i+1))
			wg.Add(1)
			go func() {
				defer wg.Done()
				prevs[i], _, errs[i] = r.Claim(e.ctx, sessions[i], false)
			}()
		}
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil:
				if winner >= 0 {
					e.t.Fatalf("round %d: %s and %s both won", round, sessions[winner].ID(), sessions[i].ID())
				}
				winner = i
			case !errors.Is(err, registry.ErrDuplicate):
				e.t.Fatalf("round %d: %v", round, err)
			}
		}
		if winner < 0 {
			e.t.Fatalf("round %d: nobody won", round)
		}
		for i, err := range errs {
			if err != nil && prevs[i].ID() != sessions[winner].ID() {
				e.t.Fatalf("round %d: %s was refused by %s; the winner is %s", round, sessions[i].ID(), prevs[i].ID(), sessions[winner].ID())
			}
		}
		e.wantLookup(nodes[0], "u", sessions[winner])
		e.release(nodes[winner%len(nodes)], sessions[winner])
		e.wantLookup(nodes[0], "u")
	}
}

// testConcurrentReplace: many goroutines replace one device at once: all
// win, and the replacements form one chain: every session but the last is
// reported replaced exactly once, and the first replaced nothing.
func testConcurrentReplace(e *env) {
	nodes := e.nodes()
	const racers = 24
	var wg sync.WaitGroup
	sessions := make([]*registry.Session, racers)
	prevs := make([]registry.Session, racers)
	had := make([]bool, racers)
	errs := make([]error, racers)
	for i := range racers {
		r := nodes[i%len(nodes)]
		sessions[i] = sess(nodeID(i%len(nodes)), "u", "d", uint64(i+1))
		wg.Add(1)
		go func() {
			defer wg.Done()
			prevs[i], had[i], errs[i] = r.Claim(e.ctx, sessions[i], true)
		}()
	}
	wg.Wait()
	replaced := map[string]int{}
	firsts := 0
	for i, err := range errs {
		if err != nil {
			e.t.Fatalf("Claim(%s, replace): %v", sessions[i].ID(), err)
		}
		if had[i] {
			replaced[prevs[i].ID()]++
		} else {
			firsts++
		}
	}
	got := e.lookup(nodes[0], "u")
	if len(got) != 1 || firsts != 1 {
		e.t.Fatalf("after %d replacing claims: Lookup %s, %d claims replaced nothing; want one session, one first claim", racers, ids(got), firsts)
	}
	for _, s := range sessions {
		want := 1
		if s.ID() == got[0].ID() {
			want = 0
		}
		if replaced[s.ID()] != want {
			e.t.Fatalf("%s reported replaced %d times; want %d (last: %s)", s.ID(), replaced[s.ID()], want, got[0].ID())
		}
	}
}

func testContexts(e *env) {
	r := e.node("n1")
	done, cancel := context.WithCancel(e.ctx)
	cancel()
	s := sess("n1", "u", "d", 1)
	if _, _, err := r.Claim(done, s, false); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Claim with a cancelled context: %v; want context.Canceled", err)
	}
	e.wantLookup(r, "u") // nothing was claimed
	if _, err := r.Lookup(done, app, "u"); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Lookup with a cancelled context: %v; want context.Canceled", err)
	}
	if _, err := r.Nodes(done); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Nodes with a cancelled context: %v; want context.Canceled", err)
	}
	// A release asked with a done context still happens (now, or retried
	// by the registry); if it reports an error, it is the context's.
	e.claim(r, s, false)
	if err := r.Release(done, s); err != nil && !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Release with a cancelled context: %v", err)
	}
	e.waitFor("the release asked with a cancelled context", func() error {
		if got := e.lookup(r, "u"); len(got) != 0 {
			return fmt.Errorf("Lookup = %s", ids(got))
		}
		return nil
	})
	if n := r.Count(); n != 0 {
		e.t.Fatalf("Count %d after the release", n)
	}
	// A deadline that passes during a lookup is reported as such.
	short, cancel2 := context.WithTimeout(e.ctx, time.Nanosecond)
	defer cancel2()
	<-short.Done()
	if _, err := r.Lookup(short, app, "u"); !errors.Is(err, context.DeadlineExceeded) {
		e.t.Fatalf("Lookup past its deadline: %v; want context.DeadlineExceeded", err)
	}
}

func testClosed(e *env) {
	r := e.node("n1")
	if err := r.Health(); err != nil {
		e.t.Fatalf("Health of an open registry: %v", err)
	}
	s := sess("n1", "u", "d", 1)
	e.claim(r, s, false)
	if err := r.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	if _, _, err := r.Claim(e.ctx, sess("n1", "u", "e", 2), false); !errors.Is(err, registry.ErrClosed) {
		e.t.Fatalf("Claim after Close: %v; want ErrClosed", err)
	}
	if _, err := r.Lookup(e.ctx, app, "u"); !errors.Is(err, registry.ErrClosed) {
		e.t.Fatalf("Lookup after Close: %v; want ErrClosed", err)
	}
	if _, err := r.Nodes(e.ctx); !errors.Is(err, registry.ErrClosed) {
		e.t.Fatalf("Nodes after Close: %v; want ErrClosed", err)
	}
	if err := r.Release(e.ctx, s); !errors.Is(err, registry.ErrClosed) {
		e.t.Fatalf("Release after Close: %v; want ErrClosed", err)
	}
	if err := r.Health(); !errors.Is(err, registry.ErrClosed) {
		e.t.Fatalf("Health after Close: %v; want ErrClosed", err)
	}
	if err := r.Close(); err != nil {
		e.t.Fatalf("second Close: %v", err)
	}
}

// nodeID is the id of the suite's i-th node.
func nodeID(i int) string { return fmt.Sprintf("n%d", i+1) }

// nodes opens three nodes of one cluster, or the one node of a
// single-node registry.
func (e *env) nodes() []registry.Registry {
	n := 1
	if e.cfg.Cluster {
		n = 3
	}
	out := make([]registry.Registry, n)
	for i := range out {
		out[i] = e.node(nodeID(i))
	}
	return out
}

func testLookupAcrossNodes(e *env) {
	nodes := e.nodes()
	var want []*registry.Session
	for i, d := range []string{"phone", "desk", "tablet", "car", "watch", "box"} {
		s := sess(nodeID(i%3), "alice", d, uint64(i+1))
		e.claim(nodes[i%3], s, false)
		want = append(want, s)
	}
	slices.SortFunc(want, func(a, b *registry.Session) int { return strings.Compare(a.Device, b.Device) })
	for _, r := range nodes {
		e.wantLookup(r, "alice", want...)
	}
}

func testDuplicateAcrossNodes(e *env) {
	nodes := e.nodes()
	a := sess("n1", "u", "d", 1)
	e.claim(nodes[0], a, false)
	b := sess("n2", "u", "d", 1) // the same connection id on another node is another session
	e.refused(nodes[1], b, a)
	prev, had := e.claim(nodes[1], b, true)
	if !had {
		e.t.Fatal("replace across nodes: no previous session reported")
	}
	sameSession(e.t, prev, *a)
	e.release(nodes[0], a) // the old node closes its connection: b stays
	for _, r := range nodes {
		e.wantLookup(r, "u", b)
	}
	c := sess("n3", "u", "d", 2)
	e.refused(nodes[2], c, b)
	e.release(nodes[1], b)
	e.claim(nodes[2], c, false)
	e.wantLookup(nodes[0], "u", c)
}

func testCountPerNode(e *env) {
	nodes := e.nodes()
	var first *registry.Session
	for i := range 6 {
		s := sess(nodeID(i%2), "u", fmt.Sprintf("d%d", i), uint64(i+1))
		e.claim(nodes[i%2], s, false)
		if i == 0 {
			first = s
		}
	}
	if a, b, c := nodes[0].Count(), nodes[1].Count(), nodes[2].Count(); a != 3 || b != 3 || c != 0 {
		e.t.Fatalf("Count per node %d %d %d; want 3 3 0", a, b, c)
	}
	// A session replaced from another node counts on its node until the
	// node releases it, as it still holds the connection.
	x := sess("n3", "u", "d0", 99)
	e.claim(nodes[2], x, true)
	e.release(nodes[0], first)
	if a, c := nodes[0].Count(), nodes[2].Count(); a != 2 || c != 1 {
		e.t.Fatalf("after n3 took over n1's device: Count %d on n1, %d on n3; want 2, 1", a, c)
	}
}

func testNodesListing(e *env) {
	nodes := e.nodes()
	want := func(ids ...string) func() error {
		return func() error {
			got, err := nodes[0].Nodes(e.ctx)
			if err != nil {
				return err
			}
			var names []string
			for _, n := range got {
				names = append(names, n.ID)
				if w := info(n.ID); n.WSURL != w.WSURL || n.TCPAddr != w.TCPAddr {
					e.t.Fatalf("node %+v; want the addresses of %+v", n, w)
				}
			}
			if !slices.Equal(names, ids) {
				return fmt.Errorf("nodes %v; want %v", names, ids)
			}
			return nil
		}
	}
	e.waitFor("three nodes", want("n1", "n2", "n3"))
	s := sess("n2", "u", "d", 1)
	e.claim(nodes[1], s, false)
	if err := nodes[1].Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	e.waitFor("n2 to leave", want("n1", "n3"))
	e.waitFor("the sessions of the closed node to go", func() error {
		if got := e.lookup(nodes[0], "u"); len(got) != 0 {
			return fmt.Errorf("Lookup = %s", ids(got))
		}
		return nil
	})
	if _, had := e.claim(nodes[2], sess("n3", "u", "d", 2), false); had {
		e.t.Fatal("the device of a closed node reported as a duplicate")
	}
}

// testDeadNode: a node that stops without a word (crash, kill -9) loses
// its sessions when its lease expires; its devices may then log in on
// another node even when duplicates are refused.
func testDeadNode(e *env) {
	nodes := e.nodes()
	a, b := sess("n1", "u", "d", 1), sess("n1", "v", "d", 2)
	live := sess("n2", "u", "e", 3)
	e.claim(nodes[0], a, false)
	e.claim(nodes[0], b, false)
	e.claim(nodes[1], live, false)
	e.waitFor("n1 in Nodes", func() error {
		got, err := nodes[1].Nodes(e.ctx)
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(got, func(n registry.NodeInfo) bool { return n.ID == "n1" }) {
			return fmt.Errorf("nodes %+v", got)
		}
		return nil
	})
	killed := time.Now()
	e.cfg.Kill(e.t, nodes[0])
	e.waitFor("the dead node's sessions to vanish", func() error {
		got := e.lookup(nodes[1], "u")
		if ids(got) != ids([]registry.Session{*live}) {
			return fmt.Errorf("Lookup(u) = %s", ids(got))
		}
		if got := e.lookup(nodes[2], "v"); len(got) != 0 {
			return fmt.Errorf("Lookup(v) = %s", ids(got))
		}
		return nil
	})
	e.t.Logf("sessions of the killed node gone after %v", time.Since(killed).Round(time.Millisecond))
	if _, had := e.claim(nodes[2], sess("n3", "u", "d", 4), false); had {
		e.t.Fatal("the dead node's device reported as a duplicate")
	}
	e.waitFor("the dead node to leave Nodes", func() error {
		got, err := nodes[1].Nodes(e.ctx)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(got, func(n registry.NodeInfo) bool { return n.ID == "n1" }) {
			return fmt.Errorf("nodes %+v", got)
		}
		return nil
	})
}
