package hub

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/protocol"
)

// store is a Filler over an in-memory stream per Stream: what the store
// holds, including messages the test never offers to the hub.
type fakeStore struct {
	mu     sync.Mutex
	epoch  string
	msgs   map[Stream]map[uint64]*protocol.Encoded
	fills  int
	broken bool
}

func newFakeStore() *fakeStore {
	return &fakeStore{epoch: "e1", msgs: map[Stream]map[uint64]*protocol.Encoded{}}
}

// put stores message seq of s and returns it as the hub routes it.
func (f *fakeStore) put(s Stream, seq uint64) Ordered {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.msgs[s] == nil {
		f.msgs[s] = map[uint64]*protocol.Encoded{}
	}
	e := msg(fmt.Sprintf("%d:%s", s.Kind, s.Name), seq)
	f.msgs[s][seq] = e
	return Ordered{Seq: seq, Frame: e}
}

func (f *fakeStore) Fill(_ context.Context, s Stream, after, before uint64) (string, []Ordered, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fills++
	if f.broken {
		return "", nil, fmt.Errorf("store down")
	}
	var out []Ordered
	for seq := after + 1; seq < before; seq++ {
		if e, ok := f.msgs[s][seq]; ok {
			out = append(out, Ordered{Seq: seq, Frame: e})
		}
	}
	return f.epoch, out, nil
}

func (f *fakeStore) fillCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fills
}

func frameSeqs(frames []*protocol.Encoded) []uint64 {
	out := make([]uint64, len(frames))
	for i, e := range frames {
		out[i] = e.Frame().Seq
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestSequencer(t *testing.T) {
	now := time.Now()
	m := func(seq uint64) Ordered { return Ordered{Seq: seq, Frame: msg("s", seq)} }
	var q sequencer
	if _, ok, out, _ := q.join(Position{Epoch: "e", Seq: 3}, JoinBehind, now); !ok || len(out) != 0 {
		t.Fatal("first join refused")
	}
	out, opened := q.offer("e", m(4), now)
	if got := frameSeqs(out); !slices.Equal(got, []uint64{4}) || opened {
		t.Fatalf("in order: %v, opened %v", got, opened)
	}
	if out, _ := q.offer("e", m(4), now); len(out) != 0 {
		t.Fatal("a repeat was routed")
	}
	if out, opened := q.offer("e", m(7), now); len(out) != 0 || !opened {
		t.Fatalf("out of order: routed %v, opened %v", frameSeqs(out), opened)
	}
	if out, opened := q.offer("e", m(6), now); len(out) != 0 || opened {
		t.Fatalf("second held: routed %v, opened %v", frameSeqs(out), opened)
	}
	if _, _, due := q.due(now, time.Second); due {
		t.Fatal("due before the window")
	}
	if out, _ := q.offer("e", m(5), now); !slices.Equal(frameSeqs(out), []uint64{5, 6, 7}) || q.gap != nil {
		t.Fatalf("filling the gap live: %v, gap %+v", frameSeqs(out), q.gap)
	}
	// A gap the store fills, with a hole the store no longer has (9).
	q.offer("e", m(11), now)
	after, before, due := q.due(now.Add(time.Second), time.Second)
	if !due || after != 7 || before != 11 {
		t.Fatalf("due = %d, %d, %v; want 7, 11, true", after, before, due)
	}
	if _, _, again := q.due(now.Add(time.Second), time.Second); again {
		t.Fatal("due twice while filling")
	}
	out = q.apply("e", []Ordered{m(8), m(10)}, before)
	if got := frameSeqs(out); !slices.Equal(got, []uint64{8, 10, 11}) || q.gap != nil || q.pos.Seq != 11 {
		t.Fatalf("apply: %v, pos %d, gap %+v", got, q.pos.Seq, q.gap)
	}
	// A joiner behind the position is sent back to read; one level or
	// ahead joins.
	if pos, ok, _, _ := q.join(Position{Epoch: "e", Seq: 9}, JoinBehind, now); ok || pos.Seq != 11 {
		t.Fatalf("behind: joined %v at %+v", ok, pos)
	}
	if _, ok, _, _ := q.join(Position{Epoch: "e", Seq: 12}, JoinBehind, now); !ok {
		t.Fatal("ahead: refused")
	}
	if _, ok, _, _ := q.join(Position{Epoch: "other", Seq: 50}, JoinBehind, now); ok {
		t.Fatal("another epoch: joined")
	}
	// The stream starts over in a new epoch: follow it.
	if out, _ := q.offer("e2", m(1), now); !slices.Equal(frameSeqs(out), []uint64{1}) || q.pos != (Position{Epoch: "e2", Seq: 1}) {
		t.Fatalf("new epoch: %v, pos %+v", frameSeqs(out), q.pos)
	}
}

// TestSequencerUnknownPosition: messages that arrive before the first
// connection has joined are held; the join routes those above its
// position.
func TestSequencerUnknownPosition(t *testing.T) {
	now := time.Now()
	var q sequencer
	for _, seq := range []uint64{3, 5, 4} {
		if out, opened := q.offer("e", Ordered{Seq: seq, Frame: msg("s", seq)}, now); len(out) != 0 || opened {
			t.Fatalf("offer %d before the join: %v, %v", seq, frameSeqs(out), opened)
		}
	}
	if _, _, due := q.due(now.Add(time.Hour), time.Second); due {
		t.Fatal("a gap is due before anyone joined")
	}
	if _, ok, _, _ := q.join(Position{}, JoinLive, now); ok {
		t.Fatal("a live join without a head set no position but joined")
	}
	pos, ok, out, opened := q.join(Position{Epoch: "e", Seq: 3}, JoinLive, now)
	if !ok || pos.Seq != 5 || !slices.Equal(frameSeqs(out), []uint64{4, 5}) || opened {
		t.Fatalf("join: %+v %v %v %v", pos, ok, frameSeqs(out), opened)
	}
}

// TestSequencerOverflow: past maxHeld, messages are only counted as seen,
// and the gap is due at once and filled up to the highest seen.
func TestSequencerOverflow(t *testing.T) {
	now := time.Now()
	var q sequencer
	q.join(Position{Epoch: "e"}, JoinBehind, now)
	for seq := uint64(2); seq <= maxHeld+10; seq++ {
		q.offer("e", Ordered{Seq: seq, Frame: msg("s", seq)}, now)
	}
	after, before, due := q.due(now, time.Hour)
	if !due || after != 0 || before != 2 {
		t.Fatalf("due = %d, %d, %v", after, before, due)
	}
	out := q.apply("e", []Ordered{{Seq: 1, Frame: msg("s", 1)}}, before)
	if len(out) != maxHeld+1 || q.gap == nil {
		t.Fatalf("routed %d, gap %v; want %d and a gap for what was not held", len(out), q.gap, maxHeld+1)
	}
	q.filled(now)
	after, before, due = q.due(now, 0)
	if !due || after != maxHeld+1 || before != maxHeld+11 {
		t.Fatalf("second fill: %d, %d, %v", after, before, due)
	}
}

// TestDeliverUserOrdered: messages of a user's inbox offered in any
// order, some never offered at all (lost between nodes), reach every
// connection of the user exactly once, in order, the missing ones read
// from the store.
func TestDeliverUserOrdered(t *testing.T) {
	st := newFakeStore()
	h := newHub(t, Config{Filler: st, ReorderWindow: 5 * time.Millisecond})
	s := Stream{Kind: Inbox, App: "a", Name: "u"}
	c1, c2 := newConn(), newConn()
	h.PrepareUser("a", "u")
	if _, ok := h.JoinUser("a", "u", c1, Position{Epoch: "e1"}, JoinBehind); !ok {
		t.Fatal("first join refused")
	}
	h.PrepareUser("a", "u")
	if _, ok := h.JoinUser("a", "u", c2, Position{Epoch: "e1"}, JoinBehind); !ok {
		t.Fatal("second join refused")
	}
	const n = 1000
	msgs := make([]Ordered, n)
	for i := range msgs {
		msgs[i] = st.put(s, uint64(i+1))
	}
	rand.Shuffle(n, func(i, j int) { msgs[i], msgs[j] = msgs[j], msgs[i] })
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				if i%97 == 0 {
					continue // lost on the way: only the store has it
				}
				h.DeliverUser("a", "u", "e1", msgs[i])
			}
		})
	}
	wg.Wait()
	for _, c := range []*fakeConn{c1, c2} {
		waitFor(t, "every message", func() bool { return len(c.frames()) >= n })
		if got := frameSeqs(c.frames()); !slices.Equal(got, span(1, n)) {
			t.Fatalf("conn %d got %d frames, not 1..%d in order", c.id, len(got), n)
		}
	}
	if st := h.Stats(); st.Gaps == 0 || st.Filled == 0 {
		t.Fatalf("stats %+v: the test made no gap", st)
	}
}

// TestJoinRace: a connection prepares, reads the store, and joins; a
// message appended after its read and delivered before its join reaches
// it, once.
func TestJoinRace(t *testing.T) {
	st := newFakeStore()
	h := newHub(t, Config{Filler: st, ReorderWindow: time.Hour})
	s := Stream{Kind: Inbox, App: "a", Name: "u"}
	for seq := uint64(1); seq <= 3; seq++ {
		st.put(s, seq)
	}
	c := newConn()
	h.PrepareUser("a", "u")
	// The connection read 1..3 from the store; meanwhile 4 and 5 are
	// appended and delivered, before it joins.
	h.DeliverUser("a", "u", "e1", st.put(s, 4))
	h.DeliverUser("a", "u", "e1", st.put(s, 5))
	if pos, ok := h.JoinUser("a", "u", c, Position{Epoch: "e1", Seq: 3}, JoinBehind); !ok || pos.Seq != 5 {
		t.Fatalf("join: %+v, %v", pos, ok)
	}
	h.DeliverUser("a", "u", "e1", st.put(s, 6))
	if got := frameSeqs(c.frames()); !slices.Equal(got, []uint64{4, 5, 6}) {
		t.Fatalf("got %v, want 4 5 6", got)
	}
	// A second connection that read only up to 4 is sent back to read.
	c2 := newConn()
	h.PrepareUser("a", "u")
	if pos, ok := h.JoinUser("a", "u", c2, Position{Epoch: "e1", Seq: 4}, JoinBehind); ok || pos.Seq != 6 {
		t.Fatalf("behind: %+v, %v", pos, ok)
	}
	if _, ok := h.JoinUser("a", "u", c2, Position{Epoch: "e1", Seq: 6}, JoinBehind); !ok {
		t.Fatal("caught up: refused")
	}
	h.AbandonUser("a", "u") // nothing prepared any more: a no-op
	h.RemoveUser("a", "u", c)
	h.RemoveUser("a", "u", c2)
	if st := h.Stats(); st.Users != 0 {
		t.Fatalf("users %d after every connection left", st.Users)
	}
}

// TestPublishAtOrdered: topic messages offered out of order, some never
// offered, reach every subscriber in order through the fan-out workers.
func TestPublishAtOrdered(t *testing.T) {
	st := newFakeStore()
	h := newHub(t, Config{Filler: st, ReorderWindow: 5 * time.Millisecond, Workers: 2})
	s := Stream{Kind: Topic, App: "a", Name: "news"}
	var subs []*fakeConn
	for range 40 {
		c := newConn()
		subs = append(subs, c)
		h.PrepareTopic("a", "news")
		if _, ok := h.JoinTopic("a", "news", c, Position{Epoch: "e1"}, JoinBehind, nil); !ok {
			t.Fatal("join refused")
		}
	}
	const n = 500
	for seq := uint64(1); seq <= n; seq++ {
		m := st.put(s, seq)
		if seq%50 == 7 {
			continue // lost
		}
		if seq%2 == 0 { // even ones overtake the odd one before them
			h.PublishAt("a", "news", "e1", m)
			h.PublishAt("a", "news", "e1", Ordered{Seq: seq - 1, Frame: st.msgs[s][seq-1]})
		} else if seq == n {
			h.PublishAt("a", "news", "e1", m)
		}
	}
	for _, c := range subs {
		waitFor(t, "every message", func() bool { return len(c.frames()) >= n })
		if got := frameSeqs(c.frames()); !slices.Equal(got, span(1, n)) {
			t.Fatalf("subscriber %d: %d frames, not 1..%d in order", c.id, len(got), n)
		}
	}
}

// TestFillRetried: a fill that fails is tried again after the window.
func TestFillRetried(t *testing.T) {
	st := newFakeStore()
	st.broken = true
	h := newHub(t, Config{Filler: st, ReorderWindow: 2 * time.Millisecond})
	s := Stream{Kind: Inbox, App: "a", Name: "u"}
	c := newConn()
	h.PrepareUser("a", "u")
	h.JoinUser("a", "u", c, Position{Epoch: "e1"}, JoinBehind)
	st.put(s, 1)
	h.DeliverUser("a", "u", "e1", st.put(s, 2))
	waitFor(t, "two failed fills", func() bool { return st.fillCount() >= 2 })
	st.mu.Lock()
	st.broken = false
	st.mu.Unlock()
	waitFor(t, "both messages", func() bool { return len(c.frames()) == 2 })
	if got := frameSeqs(c.frames()); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("got %v", got)
	}
}

// TestJoinLive: a live join takes the position as it stands, whatever it
// read.
func TestJoinLive(t *testing.T) {
	var q sequencer
	now := time.Now()
	q.join(Position{Epoch: "e", Seq: 10}, JoinBehind, now)
	if pos, ok, _, _ := q.join(Position{Epoch: "e", Seq: 2}, JoinLive, now); !ok || pos.Seq != 10 {
		t.Fatalf("live join: %+v, %v", pos, ok)
	}
	if pos, ok, _, _ := q.join(Position{}, JoinLive, now); !ok || pos.Seq != 10 {
		t.Fatalf("live join without a head: %+v, %v", pos, ok)
	}
}

// TestJoinAhead: a connection that read the inbox further than the hub
// has routed (messages on their way) gets only what follows its position,
// once each, whether the messages arrive or must be read from the store.
func TestJoinAhead(t *testing.T) {
	st := newFakeStore()
	h := newHub(t, Config{Filler: st, ReorderWindow: 5 * time.Millisecond})
	s := Stream{Kind: Inbox, App: "a", Name: "u"}
	first, ahead := newConn(), newConn()
	h.PrepareUser("a", "u")
	h.JoinUser("a", "u", first, Position{Epoch: "e1"}, JoinBehind)
	for seq := uint64(1); seq <= 5; seq++ {
		st.put(s, seq)
	}
	h.AddMember("a", "u", ahead)
	h.PrepareUser("a", "u")
	if pos, ok := h.JoinUser("a", "u", ahead, Position{Epoch: "e1", Seq: 3}, JoinBehind); !ok || pos.Seq != 0 {
		t.Fatalf("ahead: %+v, %v", pos, ok)
	}
	if n := len(h.UserConns("a", "u")); n != 2 {
		t.Fatalf("UserConns lists %d connections, want 2 (one waiting)", n)
	}
	h.DeliverUser("a", "u", "e1", st.put(s, 2)) // 1 is lost on the way
	h.DeliverUser("a", "u", "e1", st.put(s, 4))
	h.DeliverUser("a", "u", "e1", st.put(s, 3))
	waitFor(t, "the gap filled", func() bool { return len(first.frames()) >= 4 })
	h.DeliverUser("a", "u", "e1", st.put(s, 5))
	if got := frameSeqs(first.frames()); !slices.Equal(got, span(1, 5)) {
		t.Fatalf("first got %v", got)
	}
	if got := frameSeqs(ahead.frames()); !slices.Equal(got, []uint64{4, 5}) {
		t.Fatalf("the connection that joined at 3 got %v, want 4 5", got)
	}
	// A waiter whose messages never arrive is joined once the store
	// fills the gap up to its position.
	late := newConn()
	h.AddMember("a", "u", late)
	st.put(s, 6)
	st.put(s, 7)
	h.PrepareUser("a", "u")
	h.JoinUser("a", "u", late, Position{Epoch: "e1", Seq: 7}, JoinBehind)
	waitFor(t, "6 and 7 from the store", func() bool { return len(first.frames()) == 7 })
	h.DeliverUser("a", "u", "e1", st.put(s, 8))
	if got := frameSeqs(late.frames()); !slices.Equal(got, []uint64{8}) {
		t.Fatalf("late got %v, want 8", got)
	}
}
