// Package hub routes messages to the local connections of a user, of a
// topic's subscribers, or of every connection of an app.
//
// The indexes are sharded so that fan-out to many connections takes no
// global lock. Topic and broadcast messages are fanned out by a few workers:
// each topic's subscribers are split into parts, each part always handled by
// the same worker, so every connection sees a topic's messages in order.
// Publishes that arrive while a part's pass is running are queued and go out
// together in its next pass, one write per connection: under load the
// batches grow, and throughput rises instead of queues.
package hub

import (
	"context"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/protocol"
)

// Conn is what the hub needs of a client connection. Send must not block on
// the network.
type Conn interface {
	ID() uint64
	Send(frames ...*protocol.Encoded) error
}

// BatchSender is implemented by connections that can write a batch shared
// with other connections; the hub prefers it, so that a fan-out pass
// encodes its frames, transport framing included, once for all of them.
type BatchSender interface {
	SendBatch(b *protocol.Batch) error
}

// send writes b to c, through SendBatch when c has it.
func send(c Conn, b *protocol.Batch) error {
	if bs, ok := c.(BatchSender); ok {
		return bs.SendBatch(b)
	}
	return c.Send(b.Frames()...)
}

const (
	numShards = 64 // index shards
	numParts  = 16 // subscriber parts per topic
)

// Config configures a Hub.
type Config struct {
	Workers      int          // fan-out workers; default 2
	PendingLimit int          // messages queued per topic part; past it the part's connections are closed as lagging (see Lagger); default 65536
	Logger       *slog.Logger // default slog.Default()
	// Filler reads what a stream's gap is missing from the store; nil: a
	// gap is closed by skipping it when the window has passed.
	Filler Filler
	// ReorderWindow is how long a message that arrived out of order waits
	// for the ones before it before they are read from the store; default
	// 20 ms.
	ReorderWindow time.Duration
	// FillWorkers bounds the gap fills that read the store at once;
	// default 4.
	FillWorkers int
}

// Lagger is implemented by connections the hub can close when it cannot
// keep up with them: a topic part whose queue is full closes its
// connections with it instead of dropping their messages, and they
// recover what they missed from their position when they reconnect.
type Lagger interface {
	CloseLagging()
}

// Stats is a snapshot of the hub's counters.
type Stats struct {
	Users         int64  `json:"users"`         // users with at least one local connection
	Topics        int64  `json:"topics"`        // topics (and app broadcast groups) with local subscribers
	Subscriptions int64  `json:"subscriptions"` // topic subscriptions
	Published     uint64 `json:"published"`     // messages given to Publish and Broadcast
	Delivered     uint64 `json:"delivered"`     // frames handed to connections
	Passes        uint64 `json:"passes"`        // fan-out passes; Published*parts/Passes shows batching
	Dropped       uint64 `json:"dropped"`       // topic part queues that overflowed: their connections were closed to recover from their positions
	Repeats       uint64 `json:"repeats"`       // ordered messages dropped as already routed
	Gaps          uint64 `json:"gaps"`          // messages that arrived before one they follow
	Filled        uint64 `json:"filled"`        // messages read from the store to fill gaps
}

// Hub is the local routing table. It is safe for concurrent use.
type Hub struct {
	cfg      Config
	log      *slog.Logger
	seed     maphash.Seed
	users    [numShards]userShard
	topics   [numShards]topicShard
	workers  []*worker
	wg       sync.WaitGroup
	stopOnce sync.Once

	nUsers, nTopics, nSubs  atomic.Int64
	published, delivered    atomic.Uint64
	passes, dropped         atomic.Uint64
	repeats, gapped, filled atomic.Uint64

	gaps gaps
	stop chan struct{}
}

type userShard struct {
	mu sync.RWMutex
	m  map[string]*userEntry
}

// userEntry is a user's local connections and the ordering of the user's
// inbox. The shard's lock guards the map; mu guards every field.
type userEntry struct {
	mu      sync.Mutex // also serialises routing to conns
	conns   []Conn     // joined: routed to; copy-on-write
	members []Conn     // not joined yet (connecting, catching up)
	waiting []waiter   // joined ahead of the position: routed to once it gets there
	joiners int        // connections between PrepareUser and JoinUser
	seq     sequencer
}

// waiter is a connection that joined a stream ahead of the hub's
// position: it already has what the hub will route up to at, and joins
// the routed connections when the position gets there, so it never gets
// those messages twice.
type waiter struct {
	c     Conn
	epoch string
	at    uint64
	first func(Position) // topics: sends the REPLY when it joins
}

type topicShard struct {
	mu sync.RWMutex
	m  map[string]*topic
}

// New returns a hub with its workers started. Call Shutdown to stop them.
func New(cfg Config) *Hub {
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.PendingLimit <= 0 {
		cfg.PendingLimit = 65536
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ReorderWindow <= 0 {
		cfg.ReorderWindow = 20 * time.Millisecond
	}
	if cfg.FillWorkers <= 0 {
		cfg.FillWorkers = 4
	}
	h := &Hub{cfg: cfg, log: cfg.Logger, seed: maphash.MakeSeed(), stop: make(chan struct{})}
	for i := range h.users {
		h.users[i].m = make(map[string]*userEntry)
		h.topics[i].m = make(map[string]*topic)
	}
	for range cfg.Workers {
		w := &worker{h: h, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		h.workers = append(h.workers, w)
		h.wg.Add(1)
		go w.run()
	}
	h.gaps = gaps{h: h, open: make(map[Stream]struct{}), jobs: make(chan gapJob)}
	h.wg.Add(1 + cfg.FillWorkers)
	go h.gaps.run(h.stop)
	for range cfg.FillWorkers {
		go h.gaps.fill()
	}
	return h
}

// Shutdown stops the workers after they finish the passes under way.
// Queued messages that have not started are dropped.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.stopOnce.Do(func() {
		for _, w := range h.workers {
			close(w.stop)
		}
		close(h.stop)
	})
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns a snapshot of the hub's counters.
func (h *Hub) Stats() Stats {
	return Stats{
		Users:         h.nUsers.Load(),
		Topics:        h.nTopics.Load(),
		Subscriptions: h.nSubs.Load(),
		Published:     h.published.Load(),
		Delivered:     h.delivered.Load(),
		Passes:        h.passes.Load(),
		Dropped:       h.dropped.Load(),
		Repeats:       h.repeats.Load(),
		Gaps:          h.gapped.Load(),
		Filled:        h.filled.Load(),
	}
}

func (h *Hub) hash(s string) uint64 { return maphash.String(h.seed, s) }

func userKey(app, user string) string   { return app + "\x00" + user }
func topicKey(app, topic string) string { return app + "\x00t:" + topic }
func appKey(app string) string          { return app + "\x00b" }

// AddUser indexes c as one of user's connections and joins it to the
// inbox where the inbox's position stands (for connections that need no
// ordered start).
func (h *Hub) AddUser(app, user string, c Conn) {
	h.AddMember(app, user, c)
	h.PrepareUser(app, user)
	h.JoinUser(app, user, c, unordered, JoinLive)
}

// userShard returns the shard and key of user.
func (h *Hub) userShard(app, user string) (*userShard, string) {
	k := userKey(app, user)
	return &h.users[h.hash(k)%numShards], k
}

// entry returns user's entry, creating it. The caller holds s.mu.
func (h *Hub) entry(s *userShard, k string) *userEntry {
	u := s.m[k]
	if u == nil {
		u = &userEntry{}
		s.m[k] = u
		h.nUsers.Add(1)
	}
	return u
}

// dropIfUnused removes user's entry when nothing uses it any more. The
// caller holds s.mu and u.mu.
func (h *Hub) dropIfUnused(s *userShard, k string, u *userEntry) {
	if len(u.conns) == 0 && len(u.members) == 0 && len(u.waiting) == 0 && u.joiners == 0 && s.m[k] == u {
		delete(s.m, k)
		h.nUsers.Add(-1)
	}
}

// AddMember records c as one of user's connections here, before it joins
// the inbox: UserConns lists it (so it can be kicked or replaced), and
// nothing is routed to it until JoinUser. RemoveUser undoes it.
func (h *Hub) AddMember(app, user string, c Conn) {
	s, k := h.userShard(app, user)
	s.mu.Lock()
	defer s.mu.Unlock()
	u := h.entry(s, k)
	u.mu.Lock()
	u.members = append(u.members, c)
	u.mu.Unlock()
}

// PrepareUser announces that a connection of user is about to join its
// inbox: from now on the hub holds the inbox's messages that arrive, even
// if the user has no connection joined here yet, so that none falls
// between the connection's store read and its JoinUser. Every PrepareUser
// is followed by a JoinUser that succeeds, or by AbandonUser.
func (h *Hub) PrepareUser(app, user string) {
	s, k := h.userShard(app, user)
	s.mu.Lock()
	defer s.mu.Unlock()
	u := h.entry(s, k)
	u.mu.Lock()
	u.joiners++
	u.mu.Unlock()
}

// JoinUser joins c, a member prepared with PrepareUser, to user's inbox,
// as mode says (see JoinMode): live messages are routed to it from then
// on. It returns the inbox's position and whether c joined; if not, do
// what the mode says and call JoinUser again.
func (h *Hub) JoinUser(app, user string, c Conn, at Position, mode JoinMode) (Position, bool) {
	s, k := h.userShard(app, user)
	s.mu.Lock()
	u := s.m[k]
	s.mu.Unlock()
	if u == nil {
		panic("hub: JoinUser without PrepareUser")
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.joiners == 0 {
		panic("hub: JoinUser without PrepareUser")
	}
	st := Stream{Kind: Inbox, App: app, Name: user}
	pos, ok, out, opened := u.seq.join(at, mode, time.Now())
	if !ok {
		return pos, false
	}
	u.joiners--
	if i := slices.Index(u.members, c); i >= 0 {
		u.members = slices.Delete(u.members, i, i+1)
	}
	h.noteGap(st, opened)
	if mode == JoinBehind && at.Epoch == pos.Epoch && at.Seq > pos.Seq {
		// Ahead: it has what is still on its way to the hub.
		u.waiting = append(u.waiting, waiter{c: c, epoch: at.Epoch, at: at.Seq})
		h.noteGap(st, u.seq.expect(at.Seq, time.Now()))
		return pos, true
	}
	u.conns = append(u.conns[:len(u.conns):len(u.conns)], c)
	h.routeUser(u, at, out)
	return pos, true
}

// noteGap counts and registers a gap opened on st.
func (h *Hub) noteGap(st Stream, opened bool) {
	if opened {
		h.gapped.Add(1)
		h.gaps.opened(st)
	}
}

// routeUser sends out, which follows position before, to u's joined
// connections, joining the waiting ones as the position reaches them. The
// caller holds u.mu.
func (h *Hub) routeUser(u *userEntry, before Position, out []*protocol.Encoded) int {
	n := 0
	u.waiting = route(out, before, u.waiting,
		func(frames []*protocol.Encoded) { n = max(n, h.sendUser(u, frames)) },
		func(w waiter) { u.conns = append(u.conns[:len(u.conns):len(u.conns)], w.c) })
	return n
}

// AbandonUser undoes a PrepareUser whose connection will not join.
func (h *Hub) AbandonUser(app, user string) {
	s, k := h.userShard(app, user)
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.m[k]
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.joiners > 0 {
		u.joiners--
	}
	h.dropIfUnused(s, k, u)
}

// RemoveUser removes c from user's connections, joined or not.
func (h *Hub) RemoveUser(app, user string, c Conn) {
	s, k := h.userShard(app, user)
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.m[k]
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if i := slices.Index(u.conns, c); i >= 0 {
		u.conns = slices.Delete(slices.Clone(u.conns), i, i+1)
	}
	if i := slices.Index(u.members, c); i >= 0 {
		u.members = slices.Delete(u.members, i, i+1)
	}
	u.waiting = slices.DeleteFunc(u.waiting, func(w waiter) bool { return w.c == c })
	h.dropIfUnused(s, k, u)
}

// UserConns returns user's local connections, joined to the inbox or not.
func (h *Hub) UserConns(app, user string) []Conn {
	u := h.lookupUser(app, user)
	if u == nil {
		return nil
	}
	return u.all()
}

// all returns u's connections, joined to the inbox or not.
func (u *userEntry) all() []Conn {
	u.mu.Lock()
	defer u.mu.Unlock()
	out := make([]Conn, 0, len(u.conns)+len(u.members)+len(u.waiting))
	out = append(append(out, u.conns...), u.members...)
	for _, w := range u.waiting {
		out = append(out, w.c)
	}
	return out
}

// EachUserConn calls f for every connection of every user here, joined to
// its inbox or not, until f returns false.
func (h *Hub) EachUserConn(f func(Conn) bool) {
	for i := range h.users {
		s := &h.users[i]
		s.mu.RLock()
		entries := make([]*userEntry, 0, len(s.m))
		for _, u := range s.m {
			entries = append(entries, u)
		}
		s.mu.RUnlock()
		for _, u := range entries {
			for _, c := range u.all() {
				if !f(c) {
					return
				}
			}
		}
	}
}

// lookupUser returns user's entry, nil if it has no local connection.
func (h *Hub) lookupUser(app, user string) *userEntry {
	k := userKey(app, user)
	s := &h.users[h.hash(k)%numShards]
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[k]
}

// PushUser writes e to every local connection of user, unordered, and
// returns how many took it.
func (h *Hub) PushUser(app, user string, e *protocol.Encoded) int {
	u := h.lookupUser(app, user)
	if u == nil {
		return 0
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return h.sendUser(u, []*protocol.Encoded{e})
}

// DeliverUser routes message m of user's inbox, of epoch, to the user's
// local connections in sequence order (see Ordered delivery). It returns
// how many connections the user has here, joined or still catching up
// (those read m from the store or get it when they join), and whether m
// was new to the hub (false: it had routed or held it already).
func (h *Hub) DeliverUser(app, name, epoch string, m Ordered) (conns int, fresh bool) {
	u := h.lookupUser(app, name)
	if u == nil {
		return 0, true
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	fresh = !u.seq.has(epoch, m.Seq)
	before := u.seq.pos
	out := h.offer(&u.seq, Stream{Kind: Inbox, App: app, Name: name}, epoch, m)
	before.Epoch = u.seq.pos.Epoch
	h.routeUser(u, before, out)
	return len(u.conns) + len(u.members) + len(u.waiting), fresh
}

// offer runs m through q and counts what happened.
func (h *Hub) offer(q *sequencer, s Stream, epoch string, m Ordered) []*protocol.Encoded {
	out, opened := q.offer(epoch, m, time.Now())
	switch {
	case opened:
		h.gapped.Add(1)
		h.gaps.opened(s)
	case len(out) == 0 && q.gap == nil:
		h.repeats.Add(1)
	}
	return out
}

// sendUser writes frames to u's connections. The caller holds u.mu.
func (h *Hub) sendUser(u *userEntry, frames []*protocol.Encoded) int {
	conns := u.conns
	n := 0
	b := protocol.NewBatch(frames...)
	for _, c := range conns {
		if send(c, b) == nil {
			n++
		}
	}
	h.delivered.Add(uint64(n * len(frames)))
	return n
}

// Subscribe adds c to topic's subscribers, where the topic's position
// stands.
func (h *Hub) Subscribe(app, topic string, c Conn) {
	h.PrepareTopic(app, topic)
	h.JoinTopic(app, topic, c, unordered, JoinLive, nil)
}

// Unsubscribe removes c from topic's subscribers.
func (h *Hub) Unsubscribe(app, topic string, c Conn) { h.leave(topicKey(app, topic), c, true) }

// JoinApp adds c to app's broadcast group, where the group's position
// stands.
func (h *Hub) JoinApp(app string, c Conn) {
	h.PrepareApp(app)
	h.JoinAppAt(app, c, unordered, JoinLive, nil)
}

// LeaveApp removes c from app's broadcast group.
func (h *Hub) LeaveApp(app string, c Conn) { h.leave(appKey(app), c, false) }

// PrepareTopic announces a subscriber about to join topic (see
// PrepareUser).
func (h *Hub) PrepareTopic(app, topic string) { h.prepare(topicKey(app, topic)) }

// JoinTopic adds c, prepared with PrepareTopic, to topic's subscribers as
// mode says (see JoinUser). If c joins, first (when not nil) runs with the
// position before any live message can reach c: to send the REPLY that
// tells it.
func (h *Hub) JoinTopic(app, topic string, c Conn, at Position, mode JoinMode, first func(Position)) (Position, bool) {
	return h.joinAt(topicKey(app, topic), Stream{Kind: Topic, App: app, Name: topic}, c, at, mode, true, first)
}

// AbandonTopic undoes a PrepareTopic whose connection will not join.
func (h *Hub) AbandonTopic(app, topic string) { h.abandon(topicKey(app, topic)) }

// PrepareApp announces a connection about to join app's broadcast group.
func (h *Hub) PrepareApp(app string) { h.prepare(appKey(app)) }

// JoinAppAt adds c, prepared with PrepareApp, to app's broadcast group as
// mode says (see JoinTopic).
func (h *Hub) JoinAppAt(app string, c Conn, at Position, mode JoinMode, first func(Position)) (Position, bool) {
	return h.joinAt(appKey(app), Stream{Kind: Broadcast, App: app}, c, at, mode, false, first)
}

// AbandonApp undoes a PrepareApp whose connection will not join.
func (h *Hub) AbandonApp(app string) { h.abandon(appKey(app)) }

// Publish queues e for every local subscriber of topic, unordered, and
// returns how many there were when it was queued. Delivery happens on the
// fan-out workers.
func (h *Hub) Publish(app, topic string, e *protocol.Encoded) int {
	return h.publish(topicKey(app, topic), e)
}

// Broadcast queues e for every local connection of app, unordered.
func (h *Hub) Broadcast(app string, e *protocol.Encoded) int {
	return h.publish(appKey(app), e)
}

// PublishAt routes message m of topic's stream, of epoch, to the topic's
// local subscribers in sequence order (see Ordered delivery) and returns
// how many subscribers there are.
func (h *Hub) PublishAt(app, topic, epoch string, m Ordered) int {
	return h.deliver(topicKey(app, topic), Stream{Kind: Topic, App: app, Name: topic}, epoch, m)
}

// BroadcastAt routes message m of app's broadcast stream, of epoch, to
// every local connection of app in sequence order.
func (h *Hub) BroadcastAt(app, epoch string, m Ordered) int {
	return h.deliver(appKey(app), Stream{Kind: Broadcast, App: app}, epoch, m)
}

// Subscribers returns the number of local subscribers of topic.
func (h *Hub) Subscribers(app, topic string) int {
	k := topicKey(app, topic)
	s := &h.topics[h.hash(k)%numShards]
	s.mu.RLock()
	t := s.m[k]
	s.mu.RUnlock()
	if t == nil {
		return 0
	}
	return int(t.count.Load())
}

// lookupTopic returns the topic (or broadcast group) of key k, or nil.
func (h *Hub) lookupTopic(k string) *topic {
	s := &h.topics[h.hash(k)%numShards]
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[k]
}

func (h *Hub) prepare(k string) {
	hk := h.hash(k)
	s := &h.topics[hk%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.m[k]
	if t == nil {
		t = newTopic(h, hk)
		s.m[k] = t
		h.nTopics.Add(1)
	}
	t.joiners++
}

func (h *Hub) abandon(k string) {
	s := &h.topics[h.hash(k)%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.m[k]
	if t == nil || t.joiners == 0 {
		return
	}
	t.joiners--
	if t.joiners == 0 && t.count.Load() == 0 {
		delete(s.m, k)
		h.nTopics.Add(-1)
	}
}

// joinAt adds c, prepared, to the group of key k as mode says (see
// JoinUser).
func (h *Hub) joinAt(k string, st Stream, c Conn, at Position, mode JoinMode, isTopic bool, first func(Position)) (Position, bool) {
	s := &h.topics[h.hash(k)%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.m[k]
	if t == nil || t.joiners == 0 {
		panic("hub: join without prepare")
	}
	t.pub.Lock()
	defer t.pub.Unlock()
	known := t.seq.known
	now := time.Now()
	pos, ok, out, opened := t.seq.join(at, mode, now)
	if !ok {
		return pos, false
	}
	t.joiners--
	h.noteGap(st, opened)
	start := at // what c has; it gets what follows
	if mode == JoinLive && known {
		start = pos
	}
	counted := func() {
		t.count.Add(1)
		if isTopic {
			h.nSubs.Add(1)
		}
	}
	if mode == JoinBehind && known && at.Epoch == pos.Epoch && at.Seq > pos.Seq {
		// Ahead: it has what is still on its way to the hub.
		t.waiting = append(t.waiting, waiter{c: c, epoch: at.Epoch, at: at.Seq, first: first})
		counted()
		h.noteGap(st, t.seq.expect(at.Seq, now))
		return pos, true
	}
	if first != nil {
		first(start)
	}
	if t.parts[c.ID()%numParts].add(c) {
		counted()
	}
	h.routeTopic(t, start, out)
	return pos, true
}

// routeTopic queues out, which follows position before, for t's
// subscribers, joining the waiting ones as the position reaches them. The
// caller holds t.pub.
func (h *Hub) routeTopic(t *topic, before Position, out []*protocol.Encoded) {
	t.waiting = route(out, before, t.waiting, func(frames []*protocol.Encoded) {
		for _, e := range frames {
			t.enqueue(e)
		}
	}, func(w waiter) {
		if w.first != nil {
			w.first(Position{Epoch: w.epoch, Seq: w.at})
		}
		t.parts[w.c.ID()%numParts].add(w.c)
	})
}

// deliver routes m, of epoch, to the group of key k in sequence order.
func (h *Hub) deliver(k string, st Stream, epoch string, m Ordered) int {
	h.published.Add(1)
	t := h.lookupTopic(k)
	if t == nil {
		return 0
	}
	t.pub.Lock()
	before := t.seq.pos
	out := h.offer(&t.seq, st, epoch, m)
	before.Epoch = t.seq.pos.Epoch
	h.routeTopic(t, before, out)
	t.pub.Unlock()
	return int(t.count.Load())
}

func (h *Hub) leave(k string, c Conn, isTopic bool) {
	hk := h.hash(k)
	s := &h.topics[hk%numShards]
	s.mu.RLock()
	t := s.m[k]
	s.mu.RUnlock()
	if t == nil {
		return
	}
	t.pub.Lock()
	n := len(t.waiting)
	t.waiting = slices.DeleteFunc(t.waiting, func(w waiter) bool { return w.c == c })
	ok := len(t.waiting) < n || t.parts[c.ID()%numParts].remove(c)
	t.pub.Unlock()
	if !ok {
		return
	}
	if isTopic {
		h.nSubs.Add(-1)
	}
	s.mu.Lock()
	if t.count.Add(-1) == 0 && t.joiners == 0 && s.m[k] == t {
		delete(s.m, k)
		h.nTopics.Add(-1)
	}
	s.mu.Unlock()
}

func (h *Hub) publish(k string, e *protocol.Encoded) int {
	h.published.Add(1)
	s := &h.topics[h.hash(k)%numShards]
	s.mu.RLock()
	t := s.m[k]
	s.mu.RUnlock()
	if t == nil {
		return 0
	}
	t.pub.Lock()
	t.enqueue(e)
	t.pub.Unlock()
	return int(t.count.Load())
}
