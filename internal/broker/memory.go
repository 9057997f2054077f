package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Network is an in-process cluster of Memory brokers: what one node
// publishes reaches the other nodes of its network with interest. On a
// network of one node Publish has no one to deliver to. Tests build
// several nodes on one network, and may cut a node off with Partition to
// see what an outage does.
type Network struct {
	mu    sync.RWMutex
	nodes []*Memory // open nodes, in the order they joined
	n     atomic.Int32
}

// NewNetwork returns an empty network.
func NewNetwork() *Network { return &Network{} }

// Node adds a node to the network and returns its broker. id names the
// node in errors and logs; it need not be unique (control messages go by
// NodeSubject, to whoever subscribed to it).
func (nw *Network) Node(id string, opts Options) *Memory {
	m := &Memory{net: nw, id: id, opts: opts, limit: opts.pendingLimit(), subs: make(map[Subject]*memSubject)}
	nw.mu.Lock()
	nw.nodes = append(nw.nodes, m)
	nw.n.Store(int32(len(nw.nodes)))
	nw.mu.Unlock()
	return m
}

// Partition cuts m off from the rest of its network (cut true), as an
// outage would: m's Publish fails with ErrUnavailable, messages to m are
// lost and m's Health is non-nil. Healing it (cut false) reconnects m:
// Health turns nil and OnResync is called with nil Subjects (every
// subscription), before Partition returns.
func (nw *Network) Partition(m *Memory, cut bool) {
	if m.net != nw {
		panic("broker: Partition of a node of another network")
	}
	if cut {
		m.cut.Store(true)
		return
	}
	if !m.cut.Swap(false) {
		return
	}
	m.reconnects.Add(1)
	m.resync(Resync{Reason: "reconnected to the network"})
}

// others returns the open nodes of the network but m, and whether there
// are any, without allocating when there are none.
func (nw *Network) others(m *Memory, buf []*Memory) []*Memory {
	nw.mu.RLock()
	defer nw.mu.RUnlock()
	for _, o := range nw.nodes {
		if o != m {
			buf = append(buf, o)
		}
	}
	return buf
}

func (nw *Network) leave(m *Memory) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for i, o := range nw.nodes {
		if o == m {
			nw.nodes = append(nw.nodes[:i], nw.nodes[i+1:]...)
			break
		}
	}
	nw.n.Store(int32(len(nw.nodes)))
}

// Memory is the broker of one node of a Network. Messages wait for their
// handlers in a queue per subject, at most Options.PendingLimit of them;
// each subject's handlers run on a goroutine of their own while messages
// wait.
type Memory struct {
	net   *Network
	id    string
	opts  Options
	limit int

	cut    atomic.Bool // partitioned
	closed atomic.Bool

	mu      sync.Mutex
	subs    map[Subject]*memSubject // subjects with local interest
	dropped map[Subject]struct{}    // subjects with drops not yet reported
	wg      sync.WaitGroup          // drain goroutines

	resyncMu sync.Mutex // serialises OnResync calls

	published, publishErrors, received, droppedN, resyncs, reconnects atomic.Uint64
}

// memSubject is one subject's local registration: its handlers and the
// messages waiting for them. Its fields are guarded by Memory.mu.
type memSubject struct {
	subj     Subject
	subs     []*memSub
	queue    [][]byte
	head     int  // queue[head:] wait
	draining bool // a goroutine delivers queue
	drops    bool // messages were dropped since the last report
}

type memSub struct {
	m  *Memory
	s  *memSubject
	h  Handler
	on bool // subscribed; guarded by Memory.mu
}

var _ Broker = (*Memory)(nil)

// Publish hands data to the other nodes of the network subscribed to
// subj. With no other node on the network it only checks subj and returns.
func (m *Memory) Publish(ctx context.Context, subj Subject, data []byte) error {
	if err := subj.Validate(); err != nil {
		m.publishErrors.Add(1)
		return err
	}
	if m.closed.Load() {
		m.publishErrors.Add(1)
		return ErrClosed
	}
	if m.cut.Load() {
		m.publishErrors.Add(1)
		return fmt.Errorf("broker: node %q is cut off its network: %w", m.id, ErrUnavailable)
	}
	if m.net.n.Load() <= 1 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		m.publishErrors.Add(1)
		return fmt.Errorf("broker: publish: %w", err)
	}
	var buf [8]*Memory
	others := m.net.others(m, buf[:0])
	if len(others) == 0 {
		return nil
	}
	m.published.Add(1)
	var shared []byte // one copy for every receiver; they must not modify it
	for _, o := range others {
		if o.cut.Load() || o.closed.Load() {
			continue
		}
		if shared == nil {
			shared = append(make([]byte, 0, len(data)), data...)
		}
		o.deliver(subj, shared)
	}
	return nil
}

// deliver queues data for subj's handlers, if m has interest in it.
func (m *Memory) deliver(subj Subject, data []byte) {
	m.mu.Lock()
	s := m.subs[subj]
	if s == nil {
		m.mu.Unlock()
		return
	}
	m.received.Add(1)
	if len(s.queue)-s.head >= m.limit {
		m.droppedN.Add(1)
		s.drops = true
		if m.dropped == nil {
			m.dropped = make(map[Subject]struct{})
		}
		m.dropped[subj] = struct{}{}
		m.mu.Unlock()
		return
	}
	s.queue = append(s.queue, data)
	if !s.draining && !m.closed.Load() {
		s.draining = true
		m.wg.Add(1)
		go m.drain(s)
	}
	m.mu.Unlock()
}

// drain calls s's handlers for its queued messages, one at a time, until
// the queue is empty; then it reports drops, if any.
func (m *Memory) drain(s *memSubject) {
	defer m.wg.Done()
	var hs []Handler
	for {
		m.mu.Lock()
		if s.head == len(s.queue) || m.closed.Load() {
			s.queue, s.head = s.queue[:0], 0
			s.draining = false
			drops := s.drops
			s.drops = false
			m.mu.Unlock()
			if drops && !m.closed.Load() {
				m.resync(Resync{Subjects: []Subject{s.subj}, Reason: "messages dropped: handlers fell behind"})
			}
			return
		}
		data := s.queue[s.head]
		s.queue[s.head] = nil
		s.head++
		hs = hs[:0]
		for _, sub := range s.subs {
			hs = append(hs, sub.h)
		}
		m.mu.Unlock()
		for _, h := range hs {
			h(data)
		}
	}
}

// resync reports r through OnResync and clears the drops it covers.
func (m *Memory) resync(r Resync) {
	m.resyncMu.Lock()
	defer m.resyncMu.Unlock()
	m.mu.Lock()
	if r.Subjects == nil {
		m.dropped = nil
	} else {
		for _, s := range r.Subjects {
			delete(m.dropped, s)
		}
	}
	m.mu.Unlock()
	m.resyncs.Add(1)
	if m.opts.OnResync != nil {
		m.opts.OnResync(r)
	}
}

// Subscribe registers h for subj. The interest is in place when it
// returns.
func (m *Memory) Subscribe(ctx context.Context, subj Subject, h Handler) (Subscription, error) {
	if err := subj.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("broker: Subscribe with a nil handler")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed.Load() {
		return nil, ErrClosed
	}
	s := m.subs[subj]
	if s == nil {
		s = &memSubject{subj: subj}
		m.subs[subj] = s
	}
	sub := &memSub{m: m, s: s, h: h, on: true}
	s.subs = append(s.subs, sub)
	return sub, nil
}

// Unsubscribe drops the subscription; the subject's last one drops the
// node's interest.
func (sub *memSub) Unsubscribe() error {
	m := sub.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if !sub.on {
		return nil
	}
	sub.on = false
	s := sub.s
	for i, x := range s.subs {
		if x == sub {
			s.subs = append(s.subs[:i:i], s.subs[i+1:]...)
			break
		}
	}
	if len(s.subs) == 0 && m.subs[s.subj] == s {
		delete(m.subs, s.subj)
		delete(m.dropped, s.subj)
	}
	return nil
}

// Health is nil unless m is closed, cut off (Partition) or has dropped
// messages not yet reported through OnResync.
func (m *Memory) Health() error {
	if m.closed.Load() {
		return ErrClosed
	}
	if m.cut.Load() {
		return fmt.Errorf("broker: node %q is cut off its network: %w", m.id, ErrUnavailable)
	}
	m.mu.Lock()
	n := len(m.dropped)
	m.mu.Unlock()
	if n > 0 {
		return fmt.Errorf("broker: node %q dropped messages of %d subjects (handlers fell behind); not yet resynced", m.id, n)
	}
	return nil
}

// Stats returns m's counters.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	n := len(m.subs)
	m.mu.Unlock()
	return Stats{
		Published:     m.published.Load(),
		PublishErrors: m.publishErrors.Load(),
		Received:      m.received.Load(),
		Dropped:       m.droppedN.Load(),
		Resyncs:       m.resyncs.Load(),
		Reconnects:    m.reconnects.Load(),
		Subjects:      int64(n),
	}
}

// Close takes m off its network, drops the messages waiting for handlers
// and waits for the handler calls under way.
func (m *Memory) Close() error {
	m.mu.Lock()
	if m.closed.Swap(true) {
		m.mu.Unlock()
		return ErrClosed
	}
	m.mu.Unlock()
	m.net.leave(m)
	m.wg.Wait()
	m.mu.Lock()
	m.subs = make(map[Subject]*memSubject)
	m.dropped = nil
	m.mu.Unlock()
	return nil
}
