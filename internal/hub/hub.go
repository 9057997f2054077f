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
	"sync"
	"sync/atomic"

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
	PendingLimit int          // messages queued per topic part before new ones are dropped; default 65536
	Logger       *slog.Logger // default slog.Default()
}

// Stats is a snapshot of the hub's counters.
type Stats struct {
	Users         int64  `json:"users"`         // users with at least one local connection
	Topics        int64  `json:"topics"`        // topics (and app broadcast groups) with local subscribers
	Subscriptions int64  `json:"subscriptions"` // topic subscriptions
	Published     uint64 `json:"published"`     // messages given to Publish and Broadcast
	Delivered     uint64 `json:"delivered"`     // frames handed to connections
	Passes        uint64 `json:"passes"`        // fan-out passes; Published*parts/Passes shows batching
	Dropped       uint64 `json:"dropped"`       // messages dropped because a topic part's queue was full
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

	nUsers, nTopics, nSubs atomic.Int64
	published, delivered   atomic.Uint64
	passes, dropped        atomic.Uint64
}

type userShard struct {
	mu sync.RWMutex
	m  map[string][]Conn
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
	h := &Hub{cfg: cfg, log: cfg.Logger, seed: maphash.MakeSeed()}
	for i := range h.users {
		h.users[i].m = make(map[string][]Conn)
		h.topics[i].m = make(map[string]*topic)
	}
	for range cfg.Workers {
		w := &worker{h: h, wake: make(chan struct{}, 1), stop: make(chan struct{})}
		h.workers = append(h.workers, w)
		h.wg.Add(1)
		go w.run()
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
	}
}

func (h *Hub) hash(s string) uint64 { return maphash.String(h.seed, s) }

func userKey(app, user string) string   { return app + "\x00" + user }
func topicKey(app, topic string) string { return app + "\x00t:" + topic }
func appKey(app string) string          { return app + "\x00b" }

// AddUser indexes c as one of user's connections.
func (h *Hub) AddUser(app, user string, c Conn) {
	k := userKey(app, user)
	s := &h.users[h.hash(k)%numShards]
	s.mu.Lock()
	conns := s.m[k]
	if len(conns) == 0 {
		h.nUsers.Add(1)
	}
	s.m[k] = append(conns, c)
	s.mu.Unlock()
}

// RemoveUser removes c from user's connections.
func (h *Hub) RemoveUser(app, user string, c Conn) {
	k := userKey(app, user)
	s := &h.users[h.hash(k)%numShards]
	s.mu.Lock()
	conns := s.m[k]
	for i, x := range conns {
		if x == c {
			conns = append(conns[:i:i], conns[i+1:]...)
			break
		}
	}
	if len(conns) == 0 {
		if _, ok := s.m[k]; ok {
			delete(s.m, k)
			h.nUsers.Add(-1)
		}
	} else {
		s.m[k] = conns
	}
	s.mu.Unlock()
}

// UserConns returns user's local connections.
func (h *Hub) UserConns(app, user string) []Conn {
	k := userKey(app, user)
	s := &h.users[h.hash(k)%numShards]
	s.mu.RLock()
	conns := s.m[k]
	s.mu.RUnlock()
	return conns // copy-on-write: AddUser/RemoveUser never modify in place
}

// PushUser writes e to every local connection of user and returns how many
// took it.
func (h *Hub) PushUser(app, user string, e *protocol.Encoded) int {
	n := 0
	conns := h.UserConns(app, user)
	if len(conns) == 0 {
		return 0
	}
	b := protocol.NewBatch(e)
	for _, c := range conns {
		if send(c, b) == nil {
			n++
		}
	}
	h.delivered.Add(uint64(n))
	return n
}

// Subscribe adds c to topic's subscribers.
func (h *Hub) Subscribe(app, topic string, c Conn) { h.join(topicKey(app, topic), c, true) }

// Unsubscribe removes c from topic's subscribers.
func (h *Hub) Unsubscribe(app, topic string, c Conn) { h.leave(topicKey(app, topic), c, true) }

// JoinApp adds c to app's broadcast group.
func (h *Hub) JoinApp(app string, c Conn) { h.join(appKey(app), c, false) }

// LeaveApp removes c from app's broadcast group.
func (h *Hub) LeaveApp(app string, c Conn) { h.leave(appKey(app), c, false) }

// Publish queues e for every local subscriber of topic and returns how many
// there were when it was queued. Delivery happens on the fan-out workers.
func (h *Hub) Publish(app, topic string, e *protocol.Encoded) int {
	return h.publish(topicKey(app, topic), e)
}

// Broadcast queues e for every local connection of app.
func (h *Hub) Broadcast(app string, e *protocol.Encoded) int {
	return h.publish(appKey(app), e)
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

func (h *Hub) join(k string, c Conn, isTopic bool) {
	hk := h.hash(k)
	s := &h.topics[hk%numShards]
	s.mu.Lock()
	t := s.m[k]
	if t == nil {
		t = newTopic(h, hk)
		s.m[k] = t
		h.nTopics.Add(1)
	}
	t.count.Add(1)
	s.mu.Unlock()
	p := &t.parts[c.ID()%numParts]
	p.mu.Lock()
	_, dup := p.subs[c.ID()]
	p.subs[c.ID()] = c
	p.mu.Unlock()
	if dup { // already a member: undo the count (it stays >= 1)
		s.mu.Lock()
		t.count.Add(-1)
		s.mu.Unlock()
		return
	}
	if isTopic {
		h.nSubs.Add(1)
	}
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
	p := &t.parts[c.ID()%numParts]
	p.mu.Lock()
	_, ok := p.subs[c.ID()]
	delete(p.subs, c.ID())
	p.mu.Unlock()
	if !ok {
		return
	}
	if isTopic {
		h.nSubs.Add(-1)
	}
	s.mu.Lock()
	if t.count.Add(-1) == 0 && s.m[k] == t {
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
	for i := range t.parts {
		t.parts[i].enqueue(e)
	}
	t.pub.Unlock()
	return int(t.count.Load())
}
