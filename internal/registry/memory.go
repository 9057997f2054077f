package registry

import (
	"context"
	"fmt"
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

const numShards = 64

// Memory is the registry of a single node, in process, safe for concurrent
// use. It keeps the callers' *Session pointers (a session costs one
// pointer in a slice here) and does no I/O: its operations fail only when
// the context is done or after Close.
type Memory struct {
	seed   maphash.Seed
	shards [numShards]shard
	count  atomic.Int64
	closed atomic.Bool
	node   NodeInfo
	load   func() Load
	now    func() time.Time
}

var _ Registry = (*Memory)(nil)

type shard struct {
	mu sync.RWMutex
	m  map[string][]*Session // app\x00user → sessions, one per device
}

// MemoryOptions configures a Memory registry.
type MemoryOptions struct {
	// Node is what Nodes reports of this node; Sessions and Seen are
	// filled in, and Started defaults to when NewMemory was called.
	Node NodeInfo
	// Load, if set, is called by Nodes for the node's load.
	Load func() Load
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// NewMemory returns an empty registry.
func NewMemory(opts MemoryOptions) *Memory {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Node.Started.IsZero() {
		opts.Node.Started = opts.Now()
	}
	m := &Memory{seed: maphash.MakeSeed(), node: opts.Node, load: opts.Load, now: opts.Now}
	for i := range m.shards {
		m.shards[i].m = make(map[string][]*Session)
	}
	return m
}

func (m *Memory) shard(app, user string) (*shard, string) {
	k := app + "\x00" + user
	return &m.shards[maphash.String(m.seed, k)%numShards], k
}

func (m *Memory) check(ctx context.Context, op string) error {
	if m.closed.Load() {
		return ErrClosed
	}
	return ctxErr(ctx, op)
}

// Claim implements Registry. Memory keeps s itself.
func (m *Memory) Claim(ctx context.Context, s *Session, replace bool) (prev Session, hadPrev bool, err error) {
	if err := m.check(ctx, "claim"); err != nil {
		return Session{}, false, err
	}
	sh, k := m.shard(s.App, s.User)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[k]
	for i := range list {
		if list[i].Device == s.Device {
			prev = *list[i]
			if !replace {
				return prev, true, fmt.Errorf("%w: device %q of user %q is on node %q (session %s)", ErrDuplicate, prev.Device, prev.User, prev.Node, prev.ID())
			}
			next := append([]*Session(nil), list...)
			next[i] = s
			sh.m[k] = next
			return prev, true, nil
		}
	}
	sh.m[k] = append(list[:len(list):len(list)], s)
	m.count.Add(1)
	return Session{}, false, nil
}

// Release implements Registry. It never fails but after Close: it does
// its work even when ctx is done, since it does not wait.
func (m *Memory) Release(_ context.Context, s *Session) error {
	if m.closed.Load() {
		return ErrClosed
	}
	sh, k := m.shard(s.App, s.User)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	list := sh.m[k]
	for i := range list {
		if list[i] == s {
			if len(list) == 1 {
				delete(sh.m, k)
			} else {
				next := make([]*Session, 0, len(list)-1)
				next = append(next, list[:i]...)
				sh.m[k] = append(next, list[i+1:]...)
			}
			m.count.Add(-1)
			return nil
		}
	}
	return nil
}

// Lookup implements Registry.
func (m *Memory) Lookup(ctx context.Context, app, user string) ([]Session, error) {
	if err := m.check(ctx, "lookup"); err != nil {
		return nil, err
	}
	sh, k := m.shard(app, user)
	sh.mu.RLock()
	list := sh.m[k]
	sh.mu.RUnlock()
	out := make([]Session, len(list))
	for i, s := range list {
		out[i] = *s
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

// Count implements Registry: the number of sessions in the registry.
func (m *Memory) Count() int { return int(m.count.Load()) }

// Nodes implements Registry: this node, the only one.
func (m *Memory) Nodes(ctx context.Context) ([]NodeInfo, error) {
	if err := m.check(ctx, "nodes"); err != nil {
		return nil, err
	}
	n := m.node
	n.Sessions = m.Count()
	n.Seen = m.now()
	if m.load != nil {
		n.Load = m.load()
	}
	return []NodeInfo{n}, nil
}

// Health implements Registry: a Memory registry works until it is closed.
func (m *Memory) Health() error {
	if m.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Close implements Registry.
func (m *Memory) Close() error {
	m.closed.Store(true)
	return nil
}
