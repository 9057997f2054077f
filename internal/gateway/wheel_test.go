package gateway

import (
	"math/rand/v2"
	"testing"
	"time"
)

// wheelHarness drives a wheel with a fake clock. Deadlines are kept per
// connection in a map the test controls; due reads them as runWheel's due
// reads lastRead.
type wheelHarness struct {
	t    *testing.T
	w    *wheel
	now  time.Time
	tick time.Duration
	span time.Duration

	deadline  map[*Conn]time.Time
	calls     map[*Conn]int       // due calls per conn
	expiredAt map[*Conn]time.Time // when advance returned it
	removed   map[*Conn]bool
}

var t0 = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC) // deliberately not tick-aligned

func newHarness(t *testing.T, tick, span time.Duration) *wheelHarness {
	return newHarnessSize(t, tick, span, 0)
}

func newHarnessSize(t *testing.T, tick, span time.Duration, conns int) *wheelHarness {
	return &wheelHarness{
		t: t, w: newWheel(tick, span, t0), now: t0, tick: tick, span: span,
		deadline:  make(map[*Conn]time.Time, conns),
		calls:     make(map[*Conn]int, conns),
		expiredAt: make(map[*Conn]time.Time, conns),
		removed:   make(map[*Conn]bool),
	}
}

func (h *wheelHarness) due(c *Conn, now time.Time) time.Time {
	h.calls[c]++
	if h.removed[c] {
		h.t.Errorf("due called for a removed conn (deadline %v)", h.rel(h.deadline[c]))
	}
	if _, ok := h.expiredAt[c]; ok {
		h.t.Errorf("due called for a conn that already expired")
	}
	if !now.Equal(h.now) {
		h.t.Errorf("due got now=%v, advance was given %v", h.rel(now), h.rel(h.now))
	}
	d, ok := h.deadline[c]
	if !ok {
		h.t.Errorf("due called for an unknown conn")
		return time.Time{}
	}
	if !now.Before(d) {
		return time.Time{}
	}
	return d
}

func (h *wheelHarness) rel(t time.Time) time.Duration { return t.Sub(t0) }

// add puts a new conn in the wheel with deadline d.
func (h *wheelHarness) add(d time.Time) *Conn {
	c := &Conn{slot: -1}
	h.deadline[c] = d
	h.w.add(c, d)
	return c
}

func (h *wheelHarness) remove(c *Conn) {
	h.w.remove(c)
	h.removed[c] = true
}

// advanceTo moves the clock to now and runs the wheel.
func (h *wheelHarness) advanceTo(now time.Time) []*Conn {
	h.t.Helper()
	h.now = now
	exp := h.w.advance(now, h.due, nil)
	for _, c := range exp {
		if _, ok := h.expiredAt[c]; ok {
			h.t.Errorf("conn returned as expired twice")
		}
		h.expiredAt[c] = now
		if c.slot != -1 || c.prev != nil || c.next != nil {
			h.t.Errorf("expired conn still linked: slot=%d prev=%p next=%p", c.slot, c.prev, c.next)
		}
	}
	return exp
}

// runUntil advances the clock in steps of step until end (inclusive).
func (h *wheelHarness) runUntil(end time.Time, step time.Duration) {
	h.t.Helper()
	for h.now.Before(end) {
		next := h.now.Add(step)
		if next.After(end) {
			next = end
		}
		h.advanceTo(next)
	}
}

// checkExpiry checks that c expired no earlier than its deadline and at
// most slack after it.
func (h *wheelHarness) checkExpiry(c *Conn, slack time.Duration) {
	h.t.Helper()
	d := h.deadline[c]
	at, ok := h.expiredAt[c]
	if !ok {
		h.t.Errorf("conn with deadline %v did not expire (now %v, due calls %d)", h.rel(d), h.rel(h.now), h.calls[c])
		return
	}
	if at.Before(d) {
		h.t.Errorf("conn with deadline %v expired early at %v", h.rel(d), h.rel(at))
	}
	if late := at.Sub(d); late > slack {
		h.t.Errorf("conn with deadline %v expired at %v: %v late, want at most %v", h.rel(d), h.rel(at), late, slack)
	}
}

// checkInvariants walks the slot lists directly: links are consistent, every
// conn records its slot, the count matches, the slot just processed is
// empty, and no conn sits in a slot that will be reached after its deadline
// (unless the deadline is already in the past, in which case it must be in
// the very next slot).
func (h *wheelHarness) checkInvariants() {
	h.t.Helper()
	w := h.w
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	seen := make(map[*Conn]bool, w.n)
	for i, head := range w.slots {
		if head != nil && head.prev != nil {
			h.t.Errorf("slot %d: head has prev", i)
		}
		for c := head; c != nil; c = c.next {
			n++
			if seen[c] {
				h.t.Fatalf("slot %d: conn listed twice (cycle?)", i)
			}
			seen[c] = true
			if int(c.slot) != i {
				h.t.Errorf("conn in slot %d records slot %d", i, c.slot)
			}
			if c.next != nil && c.next.prev != c {
				h.t.Errorf("slot %d: broken prev link", i)
			}
			if h.removed[c] {
				h.t.Errorf("removed conn still in slot %d", i)
			}
			// When will slot i next be processed?
			ahead := (i - w.pos + len(w.slots)) % len(w.slots)
			if ahead == 0 {
				h.t.Errorf("conn in slot %d, the slot just processed", i)
				continue
			}
			visit := w.start.Add(time.Duration(w.pos+ahead) * w.tick)
			next := w.start.Add(time.Duration(w.pos+1) * w.tick)
			d := h.deadline[c]
			if visit.After(d) && visit.After(next) {
				h.t.Errorf("conn with deadline %v sits in a slot visited at %v (next visit %v)", h.rel(d), h.rel(visit), h.rel(next))
			}
		}
	}
	if n != w.n {
		h.t.Errorf("slot lists hold %d conns, w.n = %d", n, w.n)
	}
}

func (h *wheelHarness) live() int {
	n := 0
	for c := range h.deadline {
		if _, exp := h.expiredAt[c]; !exp && !h.removed[c] {
			n++
		}
	}
	return n
}

func TestWheelExpiresWithinOneTick(t *testing.T) {
	const tick, span = 10 * time.Millisecond, time.Second
	h := newHarness(t, tick, span)
	offsets := []time.Duration{
		-time.Hour, -tick, 0, 1, tick / 2, tick - 1, tick, tick + 1,
		3*tick + tick/2, 17 * tick, span / 2, span - tick, span - 1, span,
	}
	var conns []*Conn
	for _, off := range offsets {
		conns = append(conns, h.add(t0.Add(off)))
	}
	if got := h.w.len(); got != len(offsets) {
		t.Fatalf("len = %d, want %d", got, len(offsets))
	}
	h.checkInvariants()

	// Step a quarter tick at a time, checking after each step that nothing
	// expired before its deadline.
	for h.now.Before(t0.Add(span + 2*tick)) {
		h.advanceTo(h.now.Add(tick / 4))
		for _, c := range conns {
			_, exp := h.expiredAt[c]
			d := h.deadline[c]
			if d.Before(t0) {
				d = t0 // past when added: due on the first tick
			}
			if !exp && !h.now.Before(d.Add(tick+tick/4)) {
				t.Fatalf("at %v conn with deadline %v has not expired", h.rel(h.now), h.rel(h.deadline[c]))
			}
		}
		h.checkInvariants()
	}
	for _, c := range conns {
		// Slot resolution is one tick; the clock moves in quarter ticks.
		// A deadline already past when added is met on the first tick.
		if h.deadline[c].Before(t0) {
			if at := h.expiredAt[c]; !at.Equal(t0.Add(tick)) {
				t.Errorf("past deadline %v: expired at %v, want the first tick", h.rel(h.deadline[c]), h.rel(at))
			}
			continue
		}
		h.checkExpiry(c, tick)
		// Touched about once per deadline: at most once early, once on time.
		if h.calls[c] > 2 {
			t.Errorf("deadline %v: due called %d times, want at most 2", h.rel(h.deadline[c]), h.calls[c])
		}
	}
	if got := h.w.len(); got != 0 {
		t.Errorf("len = %d after everything expired, want 0", got)
	}
}

// With advance called exactly on tick boundaries, expiry is at the first
// boundary at or after the deadline.
func TestWheelTickAligned(t *testing.T) {
	const tick, span = 10 * time.Millisecond, 500 * time.Millisecond
	h := newHarness(t, tick, span)
	var conns []*Conn
	for i := range 50 {
		conns = append(conns, h.add(t0.Add(time.Duration(i)*(tick+tick/7))))
	}
	h.runUntil(t0.Add(50*(tick+tick/7)+tick), tick)
	for _, c := range conns {
		h.checkExpiry(c, tick)
		d := h.deadline[c]
		ticks := (d.Sub(t0) + tick - 1) / tick // ceil
		if ticks < 1 {
			ticks = 1
		}
		if want := t0.Add(ticks * tick); !h.expiredAt[c].Equal(want) {
			t.Errorf("deadline %v: expired at %v, want %v", h.rel(d), h.rel(h.expiredAt[c]), h.rel(want))
		}
	}
}

// A read moves the deadline forward; the wheel finds out when it reaches the
// old slot, re-slots the conn, and expires it at the new deadline.
func TestWheelReslotsOnRead(t *testing.T) {
	const tick, span = 10 * time.Millisecond, time.Second
	h := newHarness(t, tick, span)
	c := h.add(t0.Add(100 * time.Millisecond))
	other := h.add(t0.Add(100 * time.Millisecond))

	h.runUntil(t0.Add(50*time.Millisecond), tick)
	h.deadline[c] = t0.Add(250 * time.Millisecond) // lastRead moved forward

	h.runUntil(t0.Add(240*time.Millisecond), tick)
	if _, exp := h.expiredAt[c]; exp {
		t.Fatalf("conn expired at %v although its deadline moved to 250ms", h.rel(h.expiredAt[c]))
	}
	h.checkExpiry(other, tick)
	if h.calls[c] < 1 {
		t.Errorf("due was never called for the conn at its old deadline")
	}
	h.checkInvariants()
	h.runUntil(t0.Add(300*time.Millisecond), tick)
	h.checkExpiry(c, tick)
	if h.calls[c] > 3 {
		t.Errorf("due called %d times, want at most 3", h.calls[c])
	}
}

// A conn that keeps reading never expires, and the wheel looks at it about
// once per idle period, not once per tick.
func TestWheelHeartbeatNeverExpires(t *testing.T) {
	const tick, idle = 10 * time.Millisecond, 200 * time.Millisecond
	h := newHarness(t, tick, idle)
	c := h.add(t0.Add(idle))
	const periods = 50
	for h.now.Before(t0.Add(periods * idle)) {
		h.advanceTo(h.now.Add(tick))
		if h.now.Sub(t0)%(idle/4) < tick {
			h.deadline[c] = h.now.Add(idle) // a read every quarter period
		}
		if _, exp := h.expiredAt[c]; exp {
			t.Fatalf("active conn expired at %v", h.rel(h.now))
		}
	}
	if h.calls[c] > 2*periods {
		t.Errorf("due called %d times over %d idle periods (%d ticks), want at most %d",
			h.calls[c], periods, periods*idle/tick, 2*periods)
	}
	if got := h.w.len(); got != 1 {
		t.Errorf("len = %d, want 1", got)
	}
}

func TestWheelRemove(t *testing.T) {
	const tick, span = 10 * time.Millisecond, time.Second
	h := newHarness(t, tick, span)
	d := t0.Add(300 * time.Millisecond)
	// Five conns in one slot (one list): remove the head, a middle and the
	// tail. insert pushes at the head, so the last added is the head.
	same := []*Conn{h.add(d), h.add(d), h.add(d), h.add(d), h.add(d)}
	alone := h.add(t0.Add(600 * time.Millisecond))
	if same[0].slot != same[4].slot {
		t.Fatalf("same deadline, different slots: %d %d", same[0].slot, same[4].slot)
	}
	if got := h.w.len(); got != 6 {
		t.Fatalf("len = %d, want 6", got)
	}

	h.remove(same[4]) // head
	h.remove(same[2]) // middle
	h.remove(same[0]) // tail
	h.remove(alone)   // only member of its slot
	for _, c := range []*Conn{same[4], same[2], same[0], alone} {
		if c.slot != -1 || c.prev != nil || c.next != nil {
			t.Errorf("removed conn still linked: slot=%d", c.slot)
		}
	}
	h.w.remove(same[2]) // twice: no-op
	h.w.remove(&Conn{slot: -1})
	if got := h.w.len(); got != 2 {
		t.Fatalf("len after removals = %d, want 2", got)
	}
	h.checkInvariants()

	h.runUntil(t0.Add(span+2*tick), tick)
	h.checkExpiry(same[1], tick)
	h.checkExpiry(same[3], tick)
	for _, c := range []*Conn{same[4], same[2], same[0], alone} {
		if h.calls[c] != 0 {
			t.Errorf("removed conn: due called %d times", h.calls[c])
		}
		if _, exp := h.expiredAt[c]; exp {
			t.Errorf("removed conn returned as expired")
		}
	}
	if got := h.w.len(); got != 0 {
		t.Errorf("len = %d, want 0", got)
	}

	// A removed conn can be added again.
	delete(h.removed, alone)
	h.deadline[alone] = h.now.Add(100 * time.Millisecond)
	h.w.add(alone, h.deadline[alone])
	h.runUntil(h.now.Add(200*time.Millisecond), tick)
	h.checkExpiry(alone, tick)
}

// Removing a conn after the wheel has re-slotted it (the usual case: the
// socket closes long after it was added) takes it out of its new slot.
func TestWheelRemoveAfterReslot(t *testing.T) {
	const tick, span = 10 * time.Millisecond, 200 * time.Millisecond
	h := newHarness(t, tick, span)
	c := h.add(t0.Add(50 * time.Millisecond))
	neighbour := h.add(t0.Add(150 * time.Millisecond))
	h.deadline[c] = t0.Add(150 * time.Millisecond)
	h.runUntil(t0.Add(100*time.Millisecond), tick)
	if h.calls[c] == 0 || c.slot != neighbour.slot {
		t.Fatalf("conn not re-slotted next to its neighbour: calls=%d slot=%d neighbour=%d", h.calls[c], c.slot, neighbour.slot)
	}
	h.remove(c)
	h.checkInvariants()
	h.runUntil(t0.Add(200*time.Millisecond), tick)
	h.checkExpiry(neighbour, tick)
	if h.calls[c] != 1 {
		t.Errorf("due called %d times for the conn, want 1 (before the removal)", h.calls[c])
	}
}

// Deadlines beyond the span go to the farthest slot and are looked at again
// each revolution until they are due.
func TestWheelClampsFarDeadlines(t *testing.T) {
	const tick, span = 10 * time.Millisecond, 100 * time.Millisecond
	h := newHarness(t, tick, span)
	far := h.add(t0.Add(10*span + 3*tick + tick/2))
	veryFar := h.add(t0.AddDate(400, 0, 0)) // beyond time.Duration: Sub saturates
	if far.slot < 0 || int(far.slot) >= len(h.w.slots) || veryFar.slot < 0 || int(veryFar.slot) >= len(h.w.slots) {
		t.Fatalf("slots out of range: %d %d of %d", far.slot, veryFar.slot, len(h.w.slots))
	}
	h.checkInvariants()

	for h.now.Before(t0.Add(12 * span)) {
		h.advanceTo(h.now.Add(tick))
		if at, exp := h.expiredAt[far]; exp && at.Before(h.deadline[far]) {
			t.Fatalf("far conn expired early at %v", h.rel(at))
		}
		h.checkInvariants()
	}
	h.checkExpiry(far, tick)
	// Clamped to the farthest slot, len(slots)-1 ticks ahead, each time.
	revs := int(h.deadline[far].Sub(t0) / (time.Duration(len(h.w.slots)-1) * tick))
	if h.calls[far] < revs || h.calls[far] > revs+3 {
		t.Errorf("far conn: due called %d times, want about %d (once per revolution)", h.calls[far], revs)
	}
	if _, exp := h.expiredAt[veryFar]; exp {
		t.Errorf("very far conn expired")
	}
	if got := h.w.len(); got != 1 {
		t.Errorf("len = %d, want 1 (the very far conn)", got)
	}
}

// A connection added with the zero deadline (or one long past) is looked at
// on the next tick.
func TestWheelPastDeadline(t *testing.T) {
	const tick, span = 10 * time.Millisecond, 100 * time.Millisecond
	h := newHarness(t, tick, span)
	h.runUntil(t0.Add(3*span+tick/3), tick) // some revolutions in
	zero := h.add(time.Time{})
	past := h.add(h.now.Add(-time.Hour))
	h.checkInvariants()
	h.advanceTo(h.now.Add(tick))
	for name, c := range map[string]*Conn{"zero": zero, "past": past} {
		if _, ok := h.expiredAt[c]; !ok {
			t.Errorf("conn with a %s deadline not expired on the next tick", name)
		}
	}
}

// When the clock jumps (a stalled process, a suspended VM), one advance
// catches up on every slot, expiring what is due and nothing else.
func TestWheelClockJump(t *testing.T) {
	const tick, span = 10 * time.Millisecond, 100 * time.Millisecond
	h := newHarness(t, tick, span)
	early := h.add(t0.Add(span / 2))
	late := h.add(t0.Add(3*span + span/2)) // clamped, several revolutions away
	justAfter := h.add(t0.Add(3*span + tick/2))

	exp := h.advanceTo(t0.Add(3 * span)) // one call, 30 ticks
	if len(exp) != 1 || exp[0] != early {
		t.Fatalf("jump expired %d conns, want just the early one", len(exp))
	}
	h.checkInvariants()
	h.runUntil(t0.Add(5*span), tick)
	h.checkExpiry(late, tick)
	h.checkExpiry(justAfter, tick)

	// Jumps of more than a whole revolution, with conns added in between.
	var conns []*Conn
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		for range 10 {
			conns = append(conns, h.add(h.now.Add(time.Duration(r.Int64N(int64(4*span))))))
		}
		h.advanceTo(h.now.Add(time.Duration(r.Int64N(int64(3 * span)))))
		h.checkInvariants()
		for _, c := range conns {
			if at, ok := h.expiredAt[c]; ok && at.Before(h.deadline[c]) {
				t.Fatalf("expired early")
			}
			if _, ok := h.expiredAt[c]; !ok && !h.now.Before(h.deadline[c].Add(tick)) {
				t.Fatalf("at %v conn with deadline %v still not expired", h.rel(h.now), h.rel(h.deadline[c]))
			}
		}
	}
}

func TestWheelEachAndLen(t *testing.T) {
	const tick, span = 10 * time.Millisecond, time.Second
	h := newHarness(t, tick, span)
	want := make(map[*Conn]bool)
	for i := range 1000 {
		c := h.add(t0.Add(time.Duration(i) * time.Millisecond * 3)) // some beyond the span
		want[c] = true
	}
	visit := func() map[*Conn]int {
		got := make(map[*Conn]int)
		h.w.each(func(c *Conn) { got[c]++ })
		return got
	}
	check := func(stage string) {
		t.Helper()
		got := visit()
		if len(got) != len(want) || h.w.len() != len(want) {
			t.Errorf("%s: each visited %d conns, len = %d, want %d", stage, len(got), h.w.len(), len(want))
		}
		for c, n := range got {
			if n != 1 {
				t.Errorf("%s: each visited a conn %d times", stage, n)
			}
			if !want[c] {
				t.Errorf("%s: each visited a conn that is not in the wheel", stage)
			}
		}
	}
	check("after add")

	i := 0
	for c := range want {
		if i%3 == 0 {
			h.remove(c)
			delete(want, c)
		}
		i++
	}
	check("after remove")

	h.runUntil(t0.Add(span/2), tick)
	for c := range h.expiredAt {
		delete(want, c)
	}
	check("after expiries")

	h.runUntil(t0.Add(4*span), tick)
	for c := range h.expiredAt {
		delete(want, c)
	}
	check("at the end")
	if len(want) != 0 {
		t.Errorf("%d conns left", len(want))
	}
	if h.live() != 0 {
		t.Errorf("harness counts %d live conns", h.live())
	}
}

// 100,000 connections spread over the slots all expire by the end of the
// span, each within a tick of its deadline.
func TestWheelManyConns(t *testing.T) {
	const tick, span = 10 * time.Millisecond, 2 * time.Second
	const n = 100_000
	h := newHarnessSize(t, tick, span, n)
	r := rand.New(rand.NewPCG(3, 4))
	conns := make([]*Conn, n)
	for i := range conns {
		conns[i] = h.add(t0.Add(time.Duration(r.Int64N(int64(span)))))
	}
	if got := h.w.len(); got != n {
		t.Fatalf("len = %d, want %d", got, n)
	}
	used := 0
	for _, head := range h.w.slots {
		if head != nil {
			used++
		}
	}
	// Deadlines in [t0, t0+span): ticks 1..span/tick-1 (tick 0 is
	// processed already, so its deadlines go to tick 1).
	if want := int(span/tick) - 1; used != want {
		t.Errorf("conns occupy %d slots, want %d (one per tick of the span)", used, want)
	}
	h.checkInvariants()

	h.runUntil(t0.Add(span+tick), tick)
	if got := h.w.len(); got != 0 {
		t.Fatalf("len = %d at the end of the span, want 0", got)
	}
	if len(h.expiredAt) != n {
		t.Fatalf("%d conns expired, want %d", len(h.expiredAt), n)
	}
	visited := 0
	h.w.each(func(*Conn) { visited++ })
	if visited != 0 {
		t.Errorf("each visited %d conns in an empty wheel", visited)
	}
	for _, c := range conns {
		h.checkExpiry(c, tick)
		if h.calls[c] > 2 {
			t.Fatalf("due called %d times for one conn", h.calls[c])
		}
		if t.Failed() {
			break
		}
	}
}

// A model run over many revolutions: conns come and go, their deadlines move
// forward (reads) by random amounts, some beyond the span, and the clock
// moves by random steps. Nothing expires early, nothing late by more than a
// tick plus one step, and the lists stay consistent.
func TestWheelRandomized(t *testing.T) {
	const tick, span = 10 * time.Millisecond, 300 * time.Millisecond
	h := newHarness(t, tick, span)
	r := rand.New(rand.NewPCG(5, 6))
	var conns []*Conn
	const maxStep = 2 * tick
	for step := 0; step < 3000; step++ {
		switch op := r.IntN(10); {
		case op < 4:
			conns = append(conns, h.add(h.now.Add(time.Duration(r.Int64N(int64(2*span))))))
		case op < 7 && len(conns) > 0:
			c := conns[r.IntN(len(conns))]
			if _, exp := h.expiredAt[c]; !exp && !h.removed[c] {
				// A read: the deadline moves forward from now.
				if nd := h.now.Add(time.Duration(r.Int64N(int64(span)))); nd.After(h.deadline[c]) {
					h.deadline[c] = nd
				}
			}
		case op < 8 && len(conns) > 0:
			c := conns[r.IntN(len(conns))]
			if _, exp := h.expiredAt[c]; !exp && !h.removed[c] {
				h.remove(c)
			}
		}
		h.advanceTo(h.now.Add(time.Duration(r.Int64N(int64(maxStep))) + 1))
		if step%50 == 0 {
			h.checkInvariants()
			if got, want := h.w.len(), h.live(); got != want {
				t.Fatalf("len = %d, want %d", got, want)
			}
		}
		for _, c := range conns {
			_, exp := h.expiredAt[c]
			if !exp && !h.removed[c] && !h.now.Before(h.deadline[c].Add(tick+maxStep)) {
				t.Fatalf("at %v conn with deadline %v not expired", h.rel(h.now), h.rel(h.deadline[c]))
			}
		}
		if t.Failed() {
			return
		}
	}
	for _, c := range conns {
		if _, exp := h.expiredAt[c]; exp {
			h.checkExpiry(c, tick+maxStep)
		}
	}
	if revs := h.now.Sub(t0) / (time.Duration(len(h.w.slots)) * tick); revs < 10 {
		t.Errorf("only %d revolutions; the test should wrap the wheel many times", revs)
	}
}
