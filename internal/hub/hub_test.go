package hub

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-push/herald/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitTimeout bounds every wait in these tests. It is generous because the
// suite runs under -race on shared machines; waits normally end in
// microseconds.
const waitTimeout = 10 * time.Second

var connIDs atomic.Uint64

// fakeConn records every Send call under a mutex. Send returns err.
type fakeConn struct {
	id  uint64
	err error

	mu    sync.Mutex
	sends [][]*protocol.Encoded // one entry per Send call
	n     atomic.Int64          // frames received
}

func newConn() *fakeConn { return &fakeConn{id: connIDs.Add(1)} }

func (c *fakeConn) ID() uint64 { return c.id }

func (c *fakeConn) Send(frames ...*protocol.Encoded) error {
	cp := slices.Clone(frames)
	c.mu.Lock()
	c.sends = append(c.sends, cp)
	c.mu.Unlock()
	c.n.Add(int64(len(frames)))
	return c.err
}

// frames returns every frame received, in order.
func (c *fakeConn) frames() []*protocol.Encoded {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []*protocol.Encoded
	for _, s := range c.sends {
		all = append(all, s...)
	}
	return all
}

func (c *fakeConn) calls() [][]*protocol.Encoded {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sends)
}

// blockingConn is a Conn whose Send reports each call on entered and then
// blocks until release is closed (or, once released, returns at once).
type blockingConn struct {
	fakeConn
	entered chan []*protocol.Encoded
	release chan struct{}
	once    sync.Once
}

func newBlockingConn(id uint64) *blockingConn {
	return &blockingConn{
		fakeConn: fakeConn{id: id},
		entered:  make(chan []*protocol.Encoded, 64),
		release:  make(chan struct{}),
	}
}

func (c *blockingConn) Send(frames ...*protocol.Encoded) error {
	err := c.fakeConn.Send(frames...)
	select {
	case c.entered <- slices.Clone(frames):
	default:
	}
	<-c.release
	return err
}

func (c *blockingConn) unblock() { c.once.Do(func() { close(c.release) }) }

// seqConn checks, per stream, that PUSH sequence numbers arrive as 1, 2, 3...
type seqConn struct {
	id uint64

	mu   sync.Mutex
	next map[string]uint64
	bad  error

	n atomic.Int64
}

func newSeqConn() *seqConn { return &seqConn{id: connIDs.Add(1), next: make(map[string]uint64)} }

func (c *seqConn) ID() uint64 { return c.id }

func (c *seqConn) Send(frames ...*protocol.Encoded) error {
	c.mu.Lock()
	for _, e := range frames {
		f := e.Frame()
		want := c.next[f.Stream] + 1
		if f.Seq != want && c.bad == nil {
			c.bad = fmt.Errorf("conn %d stream %q: got seq %d, want %d", c.id, f.Stream, f.Seq, want)
		}
		c.next[f.Stream] = f.Seq
	}
	c.mu.Unlock()
	c.n.Add(int64(len(frames)))
	return nil
}

func (c *seqConn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bad
}

func msg(stream string, seq uint64) *protocol.Encoded {
	return protocol.Encode(&protocol.Frame{Type: protocol.TypePush, Stream: stream, Seq: seq})
}

func newHub(t testing.TB, cfg Config) *Hub {
	t.Helper()
	h := New(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return h
}

// waitFor polls cond until it holds or waitTimeout passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tk.C
	}
}

// recv waits for the next Send call on a blocking conn.
func recv(t *testing.T, c *blockingConn) []*protocol.Encoded {
	t.Helper()
	select {
	case f := <-c.entered:
		return f
	case <-time.After(waitTimeout):
		t.Fatalf("conn %d: no Send within %v", c.id, waitTimeout)
		return nil
	}
}

// assertFrames checks that c received exactly want, in order.
func assertFrames(t *testing.T, name string, c *fakeConn, want ...*protocol.Encoded) {
	t.Helper()
	got := c.frames()
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %d frames %v, want %d %v", name, len(got), seqs(got), len(want), seqs(want))
	}
}

func seqs(fs []*protocol.Encoded) []string {
	out := make([]string, len(fs))
	for i, e := range fs {
		out[i] = fmt.Sprintf("%s#%d", e.Frame().Stream, e.Frame().Seq)
	}
	return out
}

// assertEmptyIndexes checks that no user or topic entry is left behind.
func assertEmptyIndexes(t *testing.T, h *Hub) {
	t.Helper()
	st := h.Stats()
	if st.Users != 0 || st.Topics != 0 || st.Subscriptions != 0 {
		t.Errorf("Stats after everyone left: users=%d topics=%d subscriptions=%d, want 0 0 0", st.Users, st.Topics, st.Subscriptions)
	}
	for i := range h.users {
		s := &h.users[i]
		s.mu.RLock()
		if n := len(s.m); n != 0 {
			t.Errorf("user shard %d holds %d entries: %v", i, n, mapKeys(s.m))
		}
		s.mu.RUnlock()
	}
	for i := range h.topics {
		s := &h.topics[i]
		s.mu.RLock()
		if n := len(s.m); n != 0 {
			t.Errorf("topic shard %d holds %d entries: %v", i, n, mapKeys(s.m))
		}
		s.mu.RUnlock()
	}
}

func mapKeys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, fmt.Sprintf("%q", k))
	}
	return ks
}

func TestPushUser(t *testing.T) {
	h := newHub(t, Config{})
	a1, a2 := newConn(), newConn() // app a, user u1
	other := newConn()             // app a, user u2
	otherApp := newConn()          // app b, user u1
	h.AddUser("a", "u1", a1)
	h.AddUser("a", "u1", a2)
	h.AddUser("a", "u2", other)
	h.AddUser("b", "u1", otherApp)

	if got := h.Stats().Users; got != 3 {
		t.Errorf("Stats().Users = %d, want 3", got)
	}
	if got := h.UserConns("a", "u1"); len(got) != 2 {
		t.Errorf("UserConns(a, u1) has %d conns, want 2", len(got))
	}

	m1 := msg("u:u1", 1)
	if n := h.PushUser("a", "u1", m1); n != 2 {
		t.Errorf("PushUser(a, u1) = %d, want 2", n)
	}
	// PushUser is synchronous: no waiting needed.
	assertFrames(t, "a1", a1, m1)
	assertFrames(t, "a2", a2, m1)
	assertFrames(t, "other user", other)
	assertFrames(t, "other app", otherApp)
	if got := h.Stats().Delivered; got != 2 {
		t.Errorf("Stats().Delivered = %d, want 2", got)
	}

	if n := h.PushUser("a", "nobody", m1); n != 0 {
		t.Errorf("PushUser to an unknown user = %d, want 0", n)
	}
	if n := h.PushUser("c", "u1", m1); n != 0 {
		t.Errorf("PushUser to an unknown app = %d, want 0", n)
	}
}

func TestPushUserSendError(t *testing.T) {
	h := newHub(t, Config{})
	ok, bad := newConn(), newConn()
	bad.err = errors.New("closed")
	h.AddUser("a", "u", ok)
	h.AddUser("a", "u", bad)
	m := msg("u:u", 1)
	if n := h.PushUser("a", "u", m); n != 1 {
		t.Errorf("PushUser = %d, want 1 (the failing conn must not count)", n)
	}
	assertFrames(t, "bad conn (Send still attempted)", bad, m)
	if got := h.Stats().Delivered; got != 1 {
		t.Errorf("Stats().Delivered = %d, want 1", got)
	}
}

func TestRemoveUser(t *testing.T) {
	h := newHub(t, Config{})
	c1, c2, c3 := newConn(), newConn(), newConn()
	h.AddUser("a", "u", c1)
	h.AddUser("a", "u", c2)
	h.AddUser("a", "u", c3)

	snapshot := h.UserConns("a", "u")
	want := slices.Clone(snapshot)

	h.RemoveUser("a", "u", c2) // middle
	if n := h.PushUser("a", "u", msg("u:u", 1)); n != 2 {
		t.Errorf("after removing c2, PushUser = %d, want 2", n)
	}
	if len(c2.frames()) != 0 {
		t.Errorf("removed conn received %d frames", len(c2.frames()))
	}

	// Removing a conn that is not there, or from a user that does not
	// exist, changes nothing.
	h.RemoveUser("a", "u", c2)
	h.RemoveUser("a", "ghost", c2)
	h.RemoveUser("b", "u", c1)
	if got := h.Stats().Users; got != 1 {
		t.Errorf("Stats().Users = %d, want 1", got)
	}

	// Copy-on-write: a slice returned earlier is not changed by later
	// additions and removals.
	h.AddUser("a", "u", newConn())
	h.RemoveUser("a", "u", c3) // last of the original ones
	h.AddUser("a", "u", newConn())
	if !slices.Equal(snapshot, want) {
		t.Errorf("UserConns snapshot changed after Add/RemoveUser")
	}

	for _, c := range h.UserConns("a", "u") {
		h.RemoveUser("a", "u", c)
	}
	if got := h.Stats().Users; got != 0 {
		t.Errorf("Stats().Users = %d after removing every conn, want 0", got)
	}
	if n := h.PushUser("a", "u", msg("u:u", 2)); n != 0 {
		t.Errorf("PushUser after RemoveUser of every conn = %d, want 0", n)
	}
	if got := h.UserConns("a", "u"); len(got) != 0 {
		t.Errorf("UserConns after removal = %d conns, want 0", len(got))
	}
	assertEmptyIndexes(t, h)
}

func TestSubscribePublish(t *testing.T) {
	h := newHub(t, Config{})
	s1, s2 := newConn(), newConn()
	sport := newConn()
	otherApp := newConn()
	h.Subscribe("a", "news", s1)
	h.Subscribe("a", "news", s2)
	h.Subscribe("a", "other", s2)
	h.Subscribe("a", "sport", sport)
	h.Subscribe("b", "news", otherApp)

	if got := h.Subscribers("a", "news"); got != 2 {
		t.Errorf("Subscribers(a, news) = %d, want 2", got)
	}
	if got := h.Subscribers("a", "nothing"); got != 0 {
		t.Errorf("Subscribers(a, nothing) = %d, want 0", got)
	}
	st := h.Stats()
	if st.Topics != 4 || st.Subscriptions != 5 {
		t.Errorf("Stats: topics=%d subscriptions=%d, want 4 5", st.Topics, st.Subscriptions)
	}

	m1 := msg("t:news", 1)
	if n := h.Publish("a", "news", m1); n != 2 {
		t.Errorf("Publish(a, news) = %d, want 2", n)
	}
	waitFor(t, "news delivered to both subscribers", func() bool { return s1.n.Load() == 1 && s2.n.Load() == 1 })

	// Sentinels on the other topics: once they are in, anything misrouted
	// would have had every chance to arrive.
	sp, ob := msg("t:sport", 1), msg("t:news@b", 1)
	h.Publish("a", "sport", sp)
	h.Publish("b", "news", ob)
	waitFor(t, "sentinels", func() bool { return sport.n.Load() >= 1 && otherApp.n.Load() >= 1 })
	assertFrames(t, "sport subscriber", sport, sp)
	assertFrames(t, "app b subscriber", otherApp, ob)

	// Unsubscribe: s2 gets nothing more from news.
	h.Unsubscribe("a", "news", s2)
	if got := h.Subscribers("a", "news"); got != 1 {
		t.Errorf("Subscribers(a, news) after Unsubscribe = %d, want 1", got)
	}
	m2 := msg("t:news", 2)
	if n := h.Publish("a", "news", m2); n != 1 {
		t.Errorf("Publish after Unsubscribe = %d, want 1", n)
	}
	waitFor(t, "second news message", func() bool { return s1.n.Load() == 2 })
	o1 := msg("t:other", 1)
	h.Publish("a", "other", o1)
	waitFor(t, "sentinel on other", func() bool { return s2.n.Load() >= 2 })
	assertFrames(t, "s1", s1, m1, m2)
	got := s2.frames()
	if len(got) != 2 || got[0] != m1 || got[1] != o1 {
		t.Errorf("s2 got %v, want [t:news#1 t:other#1]", seqs(got))
	}

	// No subscribers: nothing queued, Published still counts.
	before := h.Stats()
	if n := h.Publish("a", "nothing", msg("t:nothing", 1)); n != 0 {
		t.Errorf("Publish to a topic without subscribers = %d, want 0", n)
	}
	after := h.Stats()
	if after.Published != before.Published+1 {
		t.Errorf("Published went %d -> %d, want +1", before.Published, after.Published)
	}

	// Unsubscribing what is not subscribed changes nothing.
	h.Unsubscribe("a", "news", s2)
	h.Unsubscribe("a", "nothing", s1)
	h.Unsubscribe("c", "news", s1)
	if st := h.Stats(); st.Subscriptions != 4 || st.Topics != 4 {
		t.Errorf("Stats after no-op unsubscribes: topics=%d subscriptions=%d, want 4 4", st.Topics, st.Subscriptions)
	}

	h.Unsubscribe("a", "news", s1)
	h.Unsubscribe("a", "other", s2)
	h.Unsubscribe("a", "sport", sport)
	h.Unsubscribe("b", "news", otherApp)
	assertEmptyIndexes(t, h)
	if n := h.Publish("a", "news", msg("t:news", 3)); n != 0 {
		t.Errorf("Publish after everyone left = %d, want 0", n)
	}
}

func TestAppIsolation(t *testing.T) {
	h := newHub(t, Config{})
	a, b := newConn(), newConn()
	h.Subscribe("a", "x", a)
	h.Subscribe("b", "x", b)
	h.AddUser("a", "x", a)
	h.AddUser("b", "x", b)
	h.JoinApp("a", a)
	h.JoinApp("b", b)

	ma := msg("t:x@a", 1)
	if n := h.Publish("a", "x", ma); n != 1 {
		t.Errorf("Publish(a, x) = %d, want 1", n)
	}
	pa := msg("u:x@a", 1)
	if n := h.PushUser("a", "x", pa); n != 1 {
		t.Errorf("PushUser(a, x) = %d, want 1", n)
	}
	ba := msg("b@a", 1)
	if n := h.Broadcast("a", ba); n != 1 {
		t.Errorf("Broadcast(a) = %d, want 1", n)
	}
	waitFor(t, "app a deliveries", func() bool { return a.n.Load() == 3 })

	mb := msg("t:x@b", 1)
	h.Publish("b", "x", mb)
	waitFor(t, "app b sentinel", func() bool { return b.n.Load() >= 1 })
	assertFrames(t, "app b conn", b, mb)

	got := a.frames()
	if len(got) != 3 || !slices.Contains(got, ma) || !slices.Contains(got, pa) || !slices.Contains(got, ba) {
		t.Errorf("app a conn got %v", seqs(got))
	}
	if got := h.Subscribers("a", "x"); got != 1 {
		t.Errorf("Subscribers(a, x) = %d, want 1", got)
	}
}

func TestBroadcast(t *testing.T) {
	h := newHub(t, Config{})
	m1, m2 := newConn(), newConn() // members of app a
	otherApp := newConn()          // member of app b
	subOnly := newConn()           // subscribed to a topic of app a, not joined
	userOnly := newConn()          // a user of app a, not joined
	h.JoinApp("a", m1)
	h.JoinApp("a", m2)
	h.JoinApp("b", otherApp)
	h.Subscribe("a", "t", subOnly)
	h.AddUser("a", "u", userOnly)

	st := h.Stats()
	if st.Topics != 3 || st.Subscriptions != 1 {
		t.Errorf("Stats: topics=%d subscriptions=%d, want 3 (2 groups + 1 topic) and 1", st.Topics, st.Subscriptions)
	}

	b1 := msg("b", 1)
	if n := h.Broadcast("a", b1); n != 2 {
		t.Errorf("Broadcast(a) = %d, want 2", n)
	}
	waitFor(t, "broadcast", func() bool { return m1.n.Load() == 1 && m2.n.Load() == 1 })

	ob, ts := msg("b@b", 1), msg("t:t", 1)
	h.Broadcast("b", ob)
	h.Publish("a", "t", ts)
	waitFor(t, "sentinels", func() bool { return otherApp.n.Load() >= 1 && subOnly.n.Load() >= 1 })
	assertFrames(t, "app b member", otherApp, ob)
	assertFrames(t, "topic subscriber of app a", subOnly, ts)
	assertFrames(t, "user of app a", userOnly)

	h.LeaveApp("a", m2)
	h.LeaveApp("a", m2) // twice: no-op
	b2 := msg("b", 2)
	if n := h.Broadcast("a", b2); n != 1 {
		t.Errorf("Broadcast after LeaveApp = %d, want 1", n)
	}
	waitFor(t, "second broadcast", func() bool { return m1.n.Load() == 2 })
	assertFrames(t, "m1", m1, b1, b2)
	assertFrames(t, "m2 (left)", m2, b1)

	h.LeaveApp("a", m1)
	h.LeaveApp("b", otherApp)
	h.Unsubscribe("a", "t", subOnly)
	h.RemoveUser("a", "u", userOnly)
	assertEmptyIndexes(t, h)
	if n := h.Broadcast("a", msg("b", 3)); n != 0 {
		t.Errorf("Broadcast with no members = %d, want 0", n)
	}
}

func TestStatsBackToZero(t *testing.T) {
	h := newHub(t, Config{Workers: 3})
	const apps, users, connsPerUser, topics = 3, 20, 3, 10
	type member struct {
		app, user string
		c         *fakeConn
		topics    []string
	}
	var all []member
	for a := range apps {
		app := fmt.Sprintf("app%d", a)
		for u := range users {
			for range connsPerUser {
				m := member{app: app, user: fmt.Sprintf("user%d", u), c: newConn()}
				for tp := range topics {
					if (u+tp)%2 == 0 {
						m.topics = append(m.topics, fmt.Sprintf("topic%d", tp))
					}
				}
				all = append(all, m)
			}
		}
	}
	wantSubs := 0
	for _, m := range all {
		h.AddUser(m.app, m.user, m.c)
		h.JoinApp(m.app, m.c)
		for _, tp := range m.topics {
			h.Subscribe(m.app, tp, m.c)
			wantSubs++
		}
	}
	st := h.Stats()
	if st.Users != apps*users {
		t.Errorf("Users = %d, want %d", st.Users, apps*users)
	}
	if st.Topics != apps*topics+apps {
		t.Errorf("Topics = %d, want %d (topics + one broadcast group per app)", st.Topics, apps*topics+apps)
	}
	if st.Subscriptions != int64(wantSubs) {
		t.Errorf("Subscriptions = %d, want %d", st.Subscriptions, wantSubs)
	}

	// Traffic, so that parts have been scheduled and run.
	var want int64
	for a := range apps {
		app := fmt.Sprintf("app%d", a)
		want += int64(h.Broadcast(app, msg("b", 1)))
		for tp := range topics {
			want += int64(h.Publish(app, fmt.Sprintf("topic%d", tp), msg("t", 1)))
		}
	}
	waitFor(t, "all deliveries", func() bool { return h.Stats().Delivered == uint64(want) })
	var got int64
	for _, m := range all {
		got += m.c.n.Load()
	}
	if got != want {
		t.Errorf("conns received %d frames, want %d", got, want)
	}
	if st := h.Stats(); st.Published != apps*(topics+1) {
		t.Errorf("Published = %d, want %d", st.Published, apps*(topics+1))
	}

	// Everyone leaves, in a shuffled order.
	rand.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for _, m := range all {
		for _, tp := range m.topics {
			h.Unsubscribe(m.app, tp, m.c)
		}
		h.LeaveApp(m.app, m.c)
		h.RemoveUser(m.app, m.user, m.c)
	}
	assertEmptyIndexes(t, h)
}

// A topic whose entry was removed when its last subscriber left can be
// subscribed to again, and messages flow.
func TestTopicRecreated(t *testing.T) {
	h := newHub(t, Config{})
	c := newConn()
	for i := range 5 {
		h.Subscribe("a", "t", c)
		m := msg("t:t", uint64(i+1))
		if n := h.Publish("a", "t", m); n != 1 {
			t.Fatalf("round %d: Publish = %d, want 1", i, n)
		}
		waitFor(t, "delivery", func() bool { return c.n.Load() == int64(i+1) })
		h.Unsubscribe("a", "t", c)
		assertEmptyIndexes(t, h)
	}
}

func TestPublishOrderOneTopic(t *testing.T) {
	h := newHub(t, Config{Workers: 4})
	const subs, msgs = 200, 10_000
	conns := make([]*seqConn, subs)
	for i := range conns {
		conns[i] = newSeqConn()
		h.Subscribe("a", "t", conns[i])
	}
	frames := make([]*protocol.Encoded, msgs)
	for i := range frames {
		frames[i] = msg("t:t", uint64(i+1))
	}
	for _, e := range frames {
		if n := h.Publish("a", "t", e); n != subs {
			t.Fatalf("Publish = %d, want %d", n, subs)
		}
	}
	waitFor(t, "every subscriber to receive every message", func() bool {
		for _, c := range conns {
			if c.n.Load() < msgs {
				return false
			}
		}
		return true
	})
	for _, c := range conns {
		if err := c.err(); err != nil {
			t.Fatal(err)
		}
		if n := c.n.Load(); n != msgs {
			t.Fatalf("conn %d received %d frames, want %d", c.id, n, msgs)
		}
	}
	st := h.Stats()
	if st.Dropped != 0 {
		t.Errorf("Dropped = %d, want 0", st.Dropped)
	}
	if st.Delivered != subs*msgs {
		t.Errorf("Delivered = %d, want %d", st.Delivered, subs*msgs)
	}
	t.Logf("%d messages x %d subscribers in %d passes (%.1f messages per pass per part)",
		msgs, subs, st.Passes, float64(msgs*numParts)/float64(st.Passes))
}

func TestPublishOrderManyTopics(t *testing.T) {
	h := newHub(t, Config{Workers: 3})
	const topics, subs, msgs = 8, 60, 2_000
	conns := make([]*seqConn, subs)
	for i := range conns {
		conns[i] = newSeqConn()
		// Every subscriber takes every topic, so streams interleave on
		// each connection.
		for tp := range topics {
			h.Subscribe("a", fmt.Sprintf("t%d", tp), conns[i])
		}
	}
	var wg sync.WaitGroup
	for tp := range topics {
		wg.Go(func() {
			name := fmt.Sprintf("t%d", tp)
			for i := range msgs {
				h.Publish("a", name, msg(name, uint64(i+1)))
			}
		})
	}
	wg.Wait()
	waitFor(t, "every message on every topic", func() bool {
		for _, c := range conns {
			if c.n.Load() < topics*msgs {
				return false
			}
		}
		return true
	})
	for _, c := range conns {
		if err := c.err(); err != nil {
			t.Fatal(err)
		}
		c.mu.Lock()
		for tp := range topics {
			name := fmt.Sprintf("t%d", tp)
			if c.next[name] != msgs {
				t.Errorf("conn %d topic %s: last seq %d, want %d", c.id, name, c.next[name], msgs)
			}
		}
		c.mu.Unlock()
	}
	if d := h.Stats().Dropped; d != 0 {
		t.Errorf("Dropped = %d, want 0", d)
	}
}

// Publishes that arrive while a pass is running go out together in the next
// pass, in one Send per connection.
func TestBatching(t *testing.T) {
	h := newHub(t, Config{Workers: 1})
	c := newBlockingConn(1)
	t.Cleanup(c.unblock)
	h.Subscribe("a", "t", c)

	m1 := msg("t:t", 1)
	h.Publish("a", "t", m1)
	if got := recv(t, c); !slices.Equal(got, []*protocol.Encoded{m1}) {
		t.Fatalf("first Send got %v, want [m1]", seqs(got))
	}
	// The first pass is now blocked inside Send.
	later := []*protocol.Encoded{msg("t:t", 2), msg("t:t", 3), msg("t:t", 4), msg("t:t", 5)}
	for _, e := range later {
		h.Publish("a", "t", e)
	}
	c.unblock()
	if got := recv(t, c); !slices.Equal(got, later) {
		t.Fatalf("second Send got %v, want all of %v in one call", seqs(got), seqs(later))
	}
	waitFor(t, "stats", func() bool { return h.Stats().Delivered == 5 })
	calls := c.calls()
	if len(calls) != 2 {
		t.Errorf("Send was called %d times, want 2", len(calls))
	}
	if st := h.Stats(); st.Passes != 2 || st.Published != 5 {
		t.Errorf("Stats: passes=%d published=%d, want 2 and 5", st.Passes, st.Published)
	}
}

// A blocked connection stalls only its own part: subscribers of the same
// topic in a part run by another worker keep receiving.
func TestSlowPartDoesNotStallOtherWorkers(t *testing.T) {
	h := newHub(t, Config{Workers: 2})
	slow := newBlockingConn(numParts) // part 0
	t.Cleanup(slow.unblock)
	fast := &fakeConn{id: numParts + 1} // part 1, hence the other worker
	h.Subscribe("a", "t", slow)
	h.Subscribe("a", "t", fast)
	k := topicKey("a", "t")
	sh := &h.topics[h.hash(k)%numShards]
	sh.mu.RLock()
	tp := sh.m[k]
	sh.mu.RUnlock()
	if tp.parts[0].w == tp.parts[1].w {
		t.Fatal("parts 0 and 1 share a worker; the test assumes consecutive parts alternate over 2 workers")
	}
	m1, m2 := msg("t:t", 1), msg("t:t", 2)
	h.Publish("a", "t", m1)
	recv(t, slow)
	h.Publish("a", "t", m2)
	waitFor(t, "fast subscriber to get both messages while the slow one is blocked", func() bool { return fast.n.Load() == 2 })
	assertFrames(t, "fast", fast, m1, m2)
	slow.unblock()
	waitFor(t, "slow subscriber", func() bool { return slow.n.Load() == 2 })
	assertFrames(t, "slow", &slow.fakeConn, m1, m2)
}

// laggingConn is a blockingConn that records being closed as lagging.
type laggingConn struct {
	*blockingConn
	lagged atomic.Int32
}

func (c *laggingConn) CloseLagging() { c.lagged.Add(1) }

// TestPendingLimit: when a part's queue is full, its connections are
// closed as lagging (they recover from their positions when they come
// back) and the queue is emptied; nothing is dropped silently.
func TestPendingLimit(t *testing.T) {
	h := newHub(t, Config{Workers: 1, PendingLimit: 3})
	c := &laggingConn{blockingConn: newBlockingConn(1)}
	t.Cleanup(c.unblock)
	h.Subscribe("a", "t", c)

	m1 := msg("t:t", 1)
	h.Publish("a", "t", m1)
	recv(t, c.blockingConn) // m1 has left the queue; the pass is blocked
	for i := uint64(2); i <= 4; i++ {
		h.Publish("a", "t", msg("t:t", i))
	}
	if d := h.Stats().Dropped; d != 0 || c.lagged.Load() != 0 {
		t.Fatalf("Dropped = %d, lagged %d before the queue was full", d, c.lagged.Load())
	}
	h.Publish("a", "t", msg("t:t", 5)) // the queue is full: the part's connections lag
	if d := h.Stats().Dropped; d != 1 || c.lagged.Load() != 1 {
		t.Fatalf("Dropped = %d, lagged %d; want 1, 1", d, c.lagged.Load())
	}
	// The queue was emptied: a message after it goes out alone (a real
	// connection would be closing by then).
	m6 := msg("t:t", 6)
	h.Publish("a", "t", m6)
	c.unblock()
	if got := recv(t, c.blockingConn); !slices.Equal(got, []*protocol.Encoded{m6}) {
		t.Errorf("after release got %v, want [m6]", seqs(got))
	}
}

func TestPublishSendError(t *testing.T) {
	h := newHub(t, Config{})
	ok, bad := newConn(), newConn()
	bad.err = errors.New("slow consumer")
	h.Subscribe("a", "t", ok)
	h.Subscribe("a", "t", bad)
	m := msg("t:t", 1)
	if n := h.Publish("a", "t", m); n != 2 {
		t.Errorf("Publish = %d, want 2", n)
	}
	waitFor(t, "both Sends", func() bool { return ok.n.Load() == 1 && bad.n.Load() == 1 })
	waitFor(t, "both passes counted", func() bool { return h.Stats().Passes >= 2 })
	if d := h.Stats().Delivered; d != 1 {
		t.Errorf("Delivered = %d, want 1 (a failed Send is not a delivery)", d)
	}
}

// Subscribe, unsubscribe, join, leave, add and remove users and publish from
// many goroutines, while stable subscribers check that they receive every
// message of every topic in order. Run with -race.
func TestConcurrentChurn(t *testing.T) {
	h := newHub(t, Config{Workers: 4})
	const (
		topics     = 4
		publishers = 4
		msgs       = 2000
		churners   = 8
		churnConns = 16
		minOps     = 3000 // per churner
	)
	stable := make([]*seqConn, 8)
	for i := range stable {
		stable[i] = newSeqConn()
		for tp := range topics {
			h.Subscribe("a", fmt.Sprintf("t%d", tp), stable[i])
		}
	}

	stop := make(chan struct{})
	var churn sync.WaitGroup
	var ops atomic.Int64
	for g := range churners {
		churn.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			type state struct {
				c      *fakeConn
				topics [topics]bool
				joined bool
				user   bool
			}
			st := make([]state, churnConns)
			for i := range st {
				st[i].c = newConn()
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					if i < minOps {
						break // keep churning a while
					}
					// Leave everything.
					for i := range st {
						s := &st[i]
						for tp := range topics {
							if s.topics[tp] {
								h.Unsubscribe("a", fmt.Sprintf("t%d", tp), s.c)
							}
						}
						if s.joined {
							h.LeaveApp("a", s.c)
						}
						if s.user {
							h.RemoveUser("a", fmt.Sprintf("u%d", g), s.c)
						}
					}
					return
				default:
				}
				ops.Add(1)
				s := &st[r.IntN(churnConns)]
				switch op := r.IntN(10); {
				case op < 5:
					tp := r.IntN(topics)
					name := fmt.Sprintf("t%d", tp)
					if s.topics[tp] {
						h.Unsubscribe("a", name, s.c)
					} else {
						h.Subscribe("a", name, s.c)
					}
					s.topics[tp] = !s.topics[tp]
				case op < 7:
					if s.joined {
						h.LeaveApp("a", s.c)
					} else {
						h.JoinApp("a", s.c)
					}
					s.joined = !s.joined
				case op < 8:
					user := fmt.Sprintf("u%d", g)
					if s.user {
						h.RemoveUser("a", user, s.c)
					} else {
						h.AddUser("a", user, s.c)
					}
					s.user = !s.user
				case op < 9:
					h.Broadcast("a", msg("b", 0))
				default:
					h.PushUser("a", fmt.Sprintf("u%d", r.IntN(churners)), msg("u", 0))
					_ = h.Subscribers("a", "t0")
					_ = h.Stats()
				}
			}
		})
	}

	var pubs sync.WaitGroup
	for p := range publishers {
		pubs.Go(func() {
			name := fmt.Sprintf("t%d", p%topics)
			for i := range msgs {
				h.Publish("a", name, msg(name, uint64(i+1)))
			}
		})
	}
	pubs.Wait()
	waitFor(t, "stable subscribers to receive everything", func() bool {
		for _, c := range stable {
			if c.n.Load() < publishers*msgs {
				return false
			}
		}
		return true
	})
	close(stop)
	churn.Wait()
	for _, c := range stable {
		if err := c.err(); err != nil {
			t.Error(err)
		}
		if n := c.n.Load(); n != publishers*msgs {
			t.Errorf("stable conn %d got %d frames, want %d", c.id, n, publishers*msgs)
		}
	}
	t.Logf("%d churn operations", ops.Load())
	for _, c := range stable {
		for tp := range topics {
			h.Unsubscribe("a", fmt.Sprintf("t%d", tp), c)
		}
	}
	assertEmptyIndexes(t, h)
}

func TestShutdown(t *testing.T) {
	h := New(Config{Workers: 4})
	c := newConn()
	h.Subscribe("a", "t", c)
	h.Publish("a", "t", msg("t:t", 1))
	waitFor(t, "delivery", func() bool { return c.n.Load() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// Workers are gone (goleak in TestMain checks too); the hub's
	// synchronous API still works and publishing does not block.
	h.Publish("a", "t", msg("t:t", 2))
	h.Broadcast("a", msg("b", 1))
	if n := h.PushUser("a", "u", msg("u", 1)); n != 0 {
		t.Errorf("PushUser = %d", n)
	}
}

// Shutdown waits for a pass under way, gives up when ctx ends, and the
// workers still exit once the pass finishes.
func TestShutdownWaitsForPass(t *testing.T) {
	h := New(Config{Workers: 1})
	c := newBlockingConn(1)
	defer c.unblock()
	h.Subscribe("a", "t", c)
	h.Publish("a", "t", msg("t:t", 1))
	recv(t, c)
	h.Publish("a", "t", msg("t:t", 2)) // queued behind the blocked pass

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	err := h.Shutdown(ctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a blocked pass = %v, want DeadlineExceeded", err)
	}
	c.unblock()
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("workers did not stop after the blocked pass finished")
	}
}

// repubConn models a topic that is never idle: every time a pass reaches it,
// one more message for the topic arrives, while load is on.
type repubConn struct {
	id   uint64
	h    *Hub
	load atomic.Bool
	seq  atomic.Uint64
}

func (c *repubConn) ID() uint64 { return c.id }

func (c *repubConn) Send(...*protocol.Encoded) error {
	if c.load.Load() {
		c.h.Publish("a", "t", msg("t:t", c.seq.Add(1)))
	}
	return nil
}

// Shutdown must stop the workers even while messages keep arriving: it
// "stops the workers after they finish the passes under way. Queued messages
// that have not started are dropped."
func TestShutdownUnderLoad(t *testing.T) {
	h := New(Config{Workers: 1})
	c := &repubConn{id: 1, h: h}
	c.load.Store(true)
	h.Subscribe("a", "t", c)
	h.Publish("a", "t", msg("t:t", 0))
	waitFor(t, "traffic", func() bool { return h.Stats().Passes > 100 })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	err := h.Shutdown(ctx)
	cancel()
	// Whatever happened, end the load and let the workers finish so that
	// goleak stays quiet.
	c.load.Store(false)
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(waitTimeout):
		t.Fatal("workers did not stop even after the load stopped")
	}
	if err != nil {
		t.Fatalf("Shutdown under sustained Publish load returned %v after %d passes", err, h.Stats().Passes)
	}
}

// Subscribe is set-like: subscribing the same conn twice and unsubscribing
// once leaves no phantom subscriber and no topic entry behind.
func TestDuplicateSubscribe(t *testing.T) {
	h := newHub(t, Config{})
	c := newConn()
	h.Subscribe("a", "t", c)
	h.Subscribe("a", "t", c)
	m := msg("t:t", 1)
	h.Publish("a", "t", m)
	waitFor(t, "delivery", func() bool { return c.n.Load() >= 1 })
	// Only one Send per pass, whatever the counters say.
	h.Unsubscribe("a", "t", c)
	st := h.Stats()
	subs := h.Subscribers("a", "t")
	if st.Subscriptions != 0 || st.Topics != 0 || subs != 0 {
		t.Fatalf("after Subscribe x2 + Unsubscribe x1 of the same conn: Subscribers=%d Stats.Subscriptions=%d Stats.Topics=%d, want 0 0 0",
			subs, st.Subscriptions, st.Topics)
	}
	assertEmptyIndexes(t, h)
}

// The same for JoinApp.
func TestDuplicateJoinApp(t *testing.T) {
	h := newHub(t, Config{})
	c := newConn()
	h.JoinApp("a", c)
	h.JoinApp("a", c)
	h.LeaveApp("a", c)
	if st := h.Stats(); st.Topics != 0 {
		t.Fatalf("after JoinApp x2 + LeaveApp x1 of the same conn, Stats.Topics=%d, want 0", st.Topics)
	}
	assertEmptyIndexes(t, h)
}

func TestShutdownTwice(t *testing.T) {
	h := New(Config{})
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var p any
	func() {
		defer func() { p = recover() }()
		_ = h.Shutdown(ctx)
	}()
	if p != nil {
		t.Fatalf("a second Shutdown panicked: %v", p)
	}
}
