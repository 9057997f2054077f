package hub

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herald-push/herald/protocol"
)

// Ordered delivery.
//
// A stored message has a position in its stream: the stream's epoch and
// the message's sequence number. The hub keeps, per stream it routes (a
// user's inbox, a topic, an app's broadcasts), the position of the last
// message it routed, and routes messages in sequence order from there,
// whatever order they arrive in: several API calls append to one stream at
// once, on this node or on others, and their messages reach the hub in any
// order. A message at or below the position is a repeat and is dropped. A
// message beyond the next one is held; if what is missing has not arrived
// within Config.ReorderWindow, the hub reads it from the store through
// Config.Filler, so a message lost between nodes is late, never missing.
// A connection joins a stream at a position: what it read from the store
// up to the hub's position, then live messages.

// Kind is the kind of an ordered stream.
type Kind uint8

// Stream kinds.
const (
	Inbox     Kind = iota + 1 // a user's inbox: routed to the user's connections
	Topic                     // a topic: routed to its subscribers
	Broadcast                 // an app's broadcasts: routed to every connection of the app
)

// Stream names a stream the hub routes.
type Stream struct {
	Kind Kind
	App  string
	Name string // user or topic; empty for Broadcast
}

// Ordered is a stored message as the hub routes it: its sequence number
// in its stream and its PUSH frame.
type Ordered struct {
	Seq   uint64
	Frame *protocol.Encoded
}

// Filler reads a stream's stored messages for the hub to fill a gap.
type Filler interface {
	// Fill returns the messages of s after after and before before, in
	// sequence order, and the stream's epoch. Messages it does not return
	// in that range are gone from the store (expired, trimmed).
	Fill(ctx context.Context, s Stream, after, before uint64) (epoch string, msgs []Ordered, err error)
}

// Position is where the hub stands in a stream: the epoch and the sequence
// number of the last message it routed.
type Position struct {
	Epoch string
	Seq   uint64
}

// maxHeld bounds the messages held out of order per stream. Past it a
// message is not held but remembered as seen, and the gap is filled from
// the store at once.
const maxHeld = 1024

// sequencer is the ordering state of one stream. Its owner's lock guards
// it.
//
// A stream's first connection joins in two steps, so that nothing falls
// between its store read and the live flow: the owner is created with its
// position unknown, before the connection reads the store, and holds every
// message that arrives meanwhile; the connection then joins at the
// position it read up to, which becomes the stream's, and what was held
// above it is routed.
type sequencer struct {
	pos   Position
	known bool // pos is set: a connection has joined
	gap   *gap // nil while nothing is held or missing
}

// gap is what a sequencer holds while a message is missing (or while its
// position is unknown).
type gap struct {
	held    []Ordered // seq > pos.Seq+1, sorted, unique
	top     uint64    // the highest seq seen, held or not
	since   time.Time // when the gap opened; zero: fill at once
	filling bool
}

// offer takes message m of epoch and returns what to route now, in order.
// opened reports that m opened a gap that must be filled if it stays.
func (q *sequencer) offer(epoch string, m Ordered, now time.Time) (out []*protocol.Encoded, opened bool) {
	if !q.known {
		q.hold(m, now)
		return nil, false
	}
	if epoch != q.pos.Epoch {
		// The stream's data was lost and it started over: follow it.
		q.pos, q.gap = Position{Epoch: epoch, Seq: m.Seq - 1}, nil
	}
	switch {
	case m.Seq <= q.pos.Seq:
		return nil, false // a repeat
	case m.Seq == q.pos.Seq+1 && q.gap == nil:
		q.pos.Seq = m.Seq
		return append(out, m.Frame), false
	case m.Seq == q.pos.Seq+1:
		q.pos.Seq = m.Seq
		return q.drain(append(out, m.Frame)), false
	}
	opened = q.gap == nil
	q.hold(m, now)
	return nil, opened
}

// has reports whether message seq of epoch was routed or is held.
func (q *sequencer) has(epoch string, seq uint64) bool {
	if q.known && epoch == q.pos.Epoch && seq <= q.pos.Seq {
		return true
	}
	if q.gap == nil {
		return false
	}
	_, found := slices.BinarySearchFunc(q.gap.held, seq, func(o Ordered, s uint64) int { return cmpU64(o.Seq, s) })
	return found
}

// hold keeps m for later (or only remembers it was seen, when full).
func (q *sequencer) hold(m Ordered, now time.Time) {
	if q.gap == nil {
		q.gap = &gap{since: now}
	}
	g := q.gap
	g.top = max(g.top, m.Seq)
	if len(g.held) >= maxHeld {
		g.since = time.Time{} // fill what is missing at once
		return
	}
	i, found := slices.BinarySearchFunc(g.held, m.Seq, func(o Ordered, s uint64) int { return cmpU64(o.Seq, s) })
	if !found {
		g.held = slices.Insert(g.held, i, m)
	}
}

// JoinMode says how a connection joins a stream.
type JoinMode uint8

const (
	// JoinBehind: the connection has read the stream from the store up to
	// at, and joins if it is not behind the hub's position (ahead of it,
	// it gets what it has again: repeats, which clients drop). The first
	// connection sets the position to at. Behind, the join is refused
	// with the position to read up to; read and join again.
	JoinBehind JoinMode = iota
	// JoinLive: the connection takes live messages from the hub's
	// position on. When the stream has no position yet, at (the stream's
	// head in the store) becomes it; with at.Epoch empty the join is then
	// refused: read the head and join again.
	JoinLive
)

// unordered is the position of streams joined with no ordered start (the
// hub's AddUser, Subscribe and JoinApp): their first message sets it.
var unordered = Position{Epoch: "unordered"}

// join decides whether a connection at at may join the stream now (see
// JoinMode), and returns the stream's position and what to route now.
// opened reports a gap left by the first join.
func (q *sequencer) join(at Position, mode JoinMode, now time.Time) (pos Position, ok bool, out []*protocol.Encoded, opened bool) {
	switch {
	case q.known && mode == JoinLive:
		return q.pos, true, nil, false
	case q.known:
		return q.pos, at.Epoch == q.pos.Epoch && at.Seq >= q.pos.Seq, nil, false
	case at.Epoch == "":
		return Position{}, false, nil, false
	}
	q.pos, q.known = at, true
	if q.gap != nil {
		q.gap.since = now
		q.gap.held = slices.DeleteFunc(q.gap.held, func(o Ordered) bool { return o.Seq <= at.Seq })
		out = q.drain(nil)
		opened = q.gap != nil
	}
	return q.pos, true, out, opened
}

// expect records that messages up to seq exist (a connection joined
// ahead, having read them from the store): if they do not arrive, the gap
// is filled. It reports a gap it opened.
func (q *sequencer) expect(seq uint64, now time.Time) (opened bool) {
	if seq <= q.pos.Seq {
		return false
	}
	if q.gap == nil {
		q.gap = &gap{since: now}
		opened = true
	}
	q.gap.top = max(q.gap.top, seq)
	return opened
}

// apply routes what a fill read: msgs, then the held messages, skipping
// what the store no longer has below before.
func (q *sequencer) apply(epoch string, msgs []Ordered, before uint64) []*protocol.Encoded {
	var out []*protocol.Encoded
	if epoch != q.pos.Epoch {
		// The stream started over while the gap was open: what is held
		// belongs to the old epoch; follow the new one from what was read.
		q.pos, q.gap = Position{Epoch: epoch}, nil
		before = 0
	}
	for _, m := range msgs {
		if m.Seq <= q.pos.Seq {
			continue
		}
		q.pos.Seq = m.Seq // a hole below it is gone from the store
		out = append(out, m.Frame)
	}
	if before > 0 && q.pos.Seq < before-1 {
		q.pos.Seq = before - 1 // the store has nothing more below before
	}
	return q.drain(out)
}

// drain appends to out the held messages that follow the position, and
// closes the gap when nothing is held or missing any more.
func (q *sequencer) drain(out []*protocol.Encoded) []*protocol.Encoded {
	g := q.gap
	if g == nil {
		return out
	}
	i := 0
	for ; i < len(g.held) && g.held[i].Seq <= q.pos.Seq+1; i++ {
		if g.held[i].Seq == q.pos.Seq+1 {
			q.pos.Seq++
			out = append(out, g.held[i].Frame)
		}
	}
	g.held = g.held[i:]
	if len(g.held) == 0 && g.top <= q.pos.Seq {
		q.gap = nil
	}
	return out
}

// due reports whether the gap should be filled now, and if so marks it
// filling and returns the range to fill.
func (q *sequencer) due(now time.Time, window time.Duration) (after, before uint64, ok bool) {
	g := q.gap
	if !q.known || g == nil || g.filling || (!g.since.IsZero() && now.Sub(g.since) < window) {
		return 0, 0, false
	}
	g.filling = true
	before = g.top + 1
	if len(g.held) > 0 {
		before = g.held[0].Seq
	}
	return q.pos.Seq, before, true
}

// filled ends a fill: the gap, if one is left, waits for the window again.
func (q *sequencer) filled(now time.Time) {
	if q.gap != nil {
		q.gap.filling, q.gap.since = false, now
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// gaps tracks the streams with a gap and fills them: one goroutine looks
// at them every half reorder window and hands the due ones to a few fill
// goroutines, which read the store.
type gaps struct {
	h    *Hub
	mu   sync.Mutex
	open map[Stream]struct{}
	jobs chan gapJob
}

// gapJob is a gap to fill: the stream's messages after after and before
// before.
type gapJob struct {
	s             Stream
	after, before uint64
}

// opened records that s has a gap.
func (g *gaps) opened(s Stream) {
	g.mu.Lock()
	g.open[s] = struct{}{}
	g.mu.Unlock()
}

// run looks for due gaps until stop is closed, then closes the job channel.
func (g *gaps) run(stop <-chan struct{}) {
	defer g.h.wg.Done()
	defer close(g.jobs)
	t := time.NewTicker(max(g.h.cfg.ReorderWindow/2, time.Millisecond))
	defer t.Stop()
	var open []Stream
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		open = open[:0]
		g.mu.Lock()
		for s := range g.open {
			open = append(open, s)
		}
		g.mu.Unlock()
		now := time.Now()
		for _, s := range open {
			job, due, gapped := g.h.dueGap(s, now)
			if !gapped {
				g.mu.Lock()
				delete(g.open, s)
				g.mu.Unlock()
				continue
			}
			if !due {
				continue
			}
			select {
			case g.jobs <- job:
			case <-stop:
				return
			}
		}
	}
}

// fill runs fill jobs until the job channel is closed.
func (g *gaps) fill() {
	defer g.h.wg.Done()
	for job := range g.jobs {
		g.h.fillGap(job)
	}
}

// dueGap looks at s's gap: job is the fill to run when due; gapped is
// false when s has no gap any more (or is gone).
func (h *Hub) dueGap(s Stream, now time.Time) (job gapJob, due, gapped bool) {
	var after, before uint64
	switch s.Kind {
	case Inbox:
		u := h.lookupUser(s.App, s.Name)
		if u == nil {
			return job, false, false
		}
		u.mu.Lock()
		after, before, due = u.seq.due(now, h.cfg.ReorderWindow)
		gapped = u.seq.gap != nil
		u.mu.Unlock()
	default:
		t := h.lookupTopic(streamKey(s))
		if t == nil {
			return job, false, false
		}
		t.pub.Lock()
		after, before, due = t.seq.due(now, h.cfg.ReorderWindow)
		gapped = t.seq.gap != nil
		t.pub.Unlock()
	}
	return gapJob{s: s, after: after, before: before}, due, gapped
}

// fillGap reads what job's gap misses and routes it, with what was held.
func (h *Hub) fillGap(job gapJob) {
	var (
		epoch string
		msgs  []Ordered
		err   error
	)
	if h.cfg.Filler != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		epoch, msgs, err = h.cfg.Filler.Fill(ctx, job.s, job.after, job.before)
		cancel()
		if err != nil {
			h.log.Warn("gap fill failed; retrying", "stream", job.s.Name, "app", job.s.App, "after", job.after, "err", err)
		}
	}
	apply := func(q *sequencer) []*protocol.Encoded {
		defer q.filled(time.Now())
		if err != nil {
			return nil
		}
		if h.cfg.Filler == nil {
			epoch = q.pos.Epoch // nothing to read: skip what is missing
		}
		h.filled.Add(uint64(len(msgs)))
		return q.apply(epoch, msgs, job.before)
	}
	switch job.s.Kind {
	case Inbox:
		u := h.lookupUser(job.s.App, job.s.Name)
		if u == nil {
			return
		}
		u.mu.Lock()
		before := u.seq.pos
		out := apply(&u.seq)
		before.Epoch = u.seq.pos.Epoch
		h.routeUser(u, before, out)
		u.mu.Unlock()
	default:
		t := h.lookupTopic(streamKey(job.s))
		if t == nil {
			return
		}
		t.pub.Lock()
		before := t.seq.pos
		out := apply(&t.seq)
		before.Epoch = t.seq.pos.Epoch
		h.routeTopic(t, before, out)
		t.pub.Unlock()
	}
}

// streamKey is the group key of a topic or broadcast stream.
func streamKey(s Stream) string {
	if s.Kind == Broadcast {
		return appKey(s.App)
	}
	return topicKey(s.App, s.Name)
}

// route hands out, in order, to send, and takes in the waiting
// connections as the routed sequence numbers reach theirs: each is
// activated right after the frame at its position, so it gets every frame
// after what it had, and none twice. at is the position before out (with
// the epoch of out). It returns the waiters still waiting.
func route(out []*protocol.Encoded, at Position, waiting []waiter, send func([]*protocol.Encoded), activate func(waiter)) []waiter {
	if len(waiting) == 0 {
		if len(out) > 0 {
			send(out)
		}
		return waiting
	}
	take := func(seq uint64) {
		waiting = slices.DeleteFunc(waiting, func(w waiter) bool {
			if w.at > seq && w.epoch == at.Epoch {
				return false
			}
			activate(w) // reached, or the stream started over: live from here
			return true
		})
	}
	take(at.Seq)
	start := 0
	for i, e := range out {
		seq := e.Frame().Seq
		if !slices.ContainsFunc(waiting, func(w waiter) bool { return w.at <= seq }) {
			continue
		}
		send(out[start : i+1])
		start = i + 1
		take(seq)
	}
	if start < len(out) {
		send(out[start:])
	}
	return waiting
}

// Expect tells the hub that stream st holds messages up to pos in the
// store (after an outage of the broker, say): if it has not routed them,
// it fills them from the store as it fills a gap.
func (h *Hub) Expect(st Stream, pos Position) {
	now := time.Now()
	expect := func(q *sequencer) bool {
		if !q.known || pos.Epoch != q.pos.Epoch || pos.Seq <= q.pos.Seq {
			return false
		}
		opened := q.expect(pos.Seq, now)
		if q.gap != nil {
			q.gap.since = time.Time{} // no reason to wait
		}
		return opened
	}
	var opened bool
	switch st.Kind {
	case Inbox:
		u := h.lookupUser(st.App, st.Name)
		if u == nil {
			return
		}
		u.mu.Lock()
		opened = expect(&u.seq)
		u.mu.Unlock()
	default:
		t := h.lookupTopic(streamKey(st))
		if t == nil {
			return
		}
		t.pub.Lock()
		opened = expect(&t.seq)
		t.pub.Unlock()
	}
	h.noteGap(st, opened)
	if !opened {
		h.gaps.opened(st) // already gapped: make sure it is looked at
	}
}

// Streams returns the streams of app (of every app when app is empty)
// the hub routes here: the inboxes of users with local connections and
// the topics and broadcast groups with local subscribers.
func (h *Hub) Streams(app string) []Stream {
	var out []Stream
	split := func(k string) (string, string, bool) {
		i := strings.IndexByte(k, 0)
		if i < 0 || (app != "" && k[:i] != app) {
			return "", "", false
		}
		return k[:i], k[i+1:], true
	}
	for i := range h.users {
		s := &h.users[i]
		s.mu.RLock()
		for k := range s.m {
			if a, user, ok := split(k); ok {
				out = append(out, Stream{Kind: Inbox, App: a, Name: user})
			}
		}
		s.mu.RUnlock()
	}
	for i := range h.topics {
		s := &h.topics[i]
		s.mu.RLock()
		for k := range s.m {
			a, rest, ok := split(k)
			switch {
			case !ok:
			case rest == "b":
				out = append(out, Stream{Kind: Broadcast, App: a})
			case strings.HasPrefix(rest, "t:"):
				out = append(out, Stream{Kind: Topic, App: a, Name: rest[2:]})
			}
		}
		s.mu.RUnlock()
	}
	return out
}
