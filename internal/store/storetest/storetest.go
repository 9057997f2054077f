// Package storetest is the conformance suite of store.Store. Every
// implementation runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
//			return store.NewMemory(store.MemoryOptions{Now: now})
//		})
//	}
//
// The suite drives time through the now function it hands to the factory:
// a store must read the clock only through it. Stores are closed by the
// suite.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
)

// NewFunc creates an empty store that reads the time from now.
type NewFunc func(t *testing.T, now func() time.Time) store.Store

// ReopenFunc closes s, a store made by the suite's NewFunc or by an earlier
// reopen, and opens the same data again with the clock now.
type ReopenFunc func(t *testing.T, s store.Store, now func() time.Time) store.Store

// LossFunc deletes stream's data (messages, id index, cursors and
// whatever the store keeps about the stream) behind the back of s, the way
// an engine that lost it would: a key evicted, a flushed database.
type LossFunc func(t *testing.T, s store.Store, stream string)

// Option changes what Run checks.
type Option func(*config)

type config struct {
	reopen ReopenFunc
	loss   LossFunc
}

// WithReopen enables the restart tests: data, cursors, sequence counters and
// the epoch must survive reopen.
func WithReopen(reopen ReopenFunc) Option {
	return func(c *config) { c.reopen = reopen }
}

// WithDataLoss enables the data loss test: after lose has deleted a
// stream's data, the stream must be in a new epoch (so that no position in
// the lost data is resumed and no seq is handed out twice in one epoch),
// no cursor may hide a message appended after the loss, and another
// stream must keep its messages and its epoch. Stores that keep one epoch
// for all their streams and lose data only as a whole (memory, embedded)
// have no use for it.
func WithDataLoss(lose LossFunc) Option {
	return func(c *config) { c.loss = lose }
}

// clock is the fake time of one subtest.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// start is the fake clock's start: arbitrary, with nanoseconds, not UTC, so
// that stores are seen to normalise it.
var start = time.Date(2030, 1, 2, 3, 4, 5, 123456789, time.FixedZone("X", 3600))

// env is one subtest's store and clock.
type env struct {
	t     *testing.T
	ctx   context.Context
	clock *clock
	s     store.Store
	cfg   *config
	new   NewFunc

	epochs map[string]string // each stream's epoch as first seen
}

// seeEpoch checks that stream's epoch, as an operation (what) returned it,
// is the one it had before: epochs never change in these tests.
func (e *env) seeEpoch(stream, epoch, what string) {
	e.t.Helper()
	if epoch == "" {
		e.t.Fatalf("%s on %q returned an empty epoch", what, stream)
	}
	if e.epochs == nil {
		e.epochs = map[string]string{}
	}
	if prev, ok := e.epochs[stream]; !ok {
		e.epochs[stream] = epoch
	} else if prev != epoch {
		e.t.Fatalf("%s on %q returned epoch %q; it was %q", what, stream, epoch, prev)
	}
}

func (e *env) open() store.Store {
	s := e.new(e.t, e.clock.Now)
	e.t.Cleanup(func() { _ = s.Close() })
	return s
}

func (e *env) reopen() {
	e.t.Helper()
	e.s = e.cfg.reopen(e.t, e.s, e.clock.Now)
	s := e.s
	e.t.Cleanup(func() { _ = s.Close() })
}

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T, now func() time.Time) store.Store, opts ...Option) {
	cfg := &config{}
	for _, o := range opts {
		o(cfg)
	}
	tests := []struct {
		name string
		fn   func(e *env)
	}{
		{"AppendAssignsSequence", testAppendAssignsSequence},
		{"EmptyStream", testEmptyStream},
		{"RangeAfterLimit", testRangeAfterLimit},
		{"Invalid", testInvalid},
		{"ContextDone", testContextDone},
		{"ConcurrentAppendOneStream", testConcurrentAppendOneStream},
		{"Expiry", testExpiry},
		{"TrimByCount", testTrimByCount},
		{"TrimByAge", testTrimByAge},
		{"Cursors", testCursors},
		{"Idempotency", testIdempotency},
		{"Lookup", testLookup},
		{"ConcurrentRetries", testConcurrentRetries},
		{"Epoch", testEpoch},
		{"ManyStreams", testManyStreams},
		{"Large", testLarge},
		{"Closed", testClosed},
		{"AppendMulti", testAppendMulti},
		{"AppendMultiIdempotency", testAppendMultiIdempotency},
		{"AppendMultiInvalid", testAppendMultiInvalid},
		{"AppendMultiConcurrent", testAppendMultiConcurrent},
		{"AppendMultiWaitsForAppend", testAppendMultiWaitsForAppend},
		{"AppendMultiClosed", testAppendMultiClosed},
	}
	if cfg.reopen != nil {
		tests = append(tests, struct {
			name string
			fn   func(e *env)
		}{"Reopen", testReopen})
	}
	if cfg.loss != nil {
		tests = append(tests, struct {
			name string
			fn   func(e *env)
		}{"DataLoss", testDataLoss})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := &env{t: t, ctx: t.Context(), clock: &clock{t: start}, cfg: cfg, new: newStore}
			e.s = e.open()
			tc.fn(e)
		})
	}
}

// msg returns a message with id and a payload derived from it.
func msg(id string) store.Message {
	return store.Message{ID: id, Payload: []byte("payload of " + id)}
}

func (e *env) append(stream string, msgs ...store.Message) []store.Appended {
	e.t.Helper()
	res, err := e.s.Append(e.ctx, stream, msgs...)
	if err != nil {
		e.t.Fatalf("Append(%q, %d messages): %v", stream, len(msgs), err)
	}
	if len(res) != len(msgs) {
		e.t.Fatalf("Append(%q, %d messages) returned %d results", stream, len(msgs), len(res))
	}
	for _, r := range res {
		e.seeEpoch(stream, r.Epoch, "Append")
	}
	return res
}

// rangeOK calls Range and fails on any error.
func (e *env) rangeOK(stream string, after uint64, limit int) []store.Message {
	e.t.Helper()
	got, epoch, err := e.s.Range(e.ctx, stream, after, limit)
	if err != nil {
		e.t.Fatalf("Range(%q, %d, %d): %v", stream, after, limit, err)
	}
	e.seeEpoch(stream, epoch, "Range")
	return got
}

// rangeTrimmed calls Range and fails unless it returns ErrTrimmed.
func (e *env) rangeTrimmed(stream string, after uint64, limit int) []store.Message {
	e.t.Helper()
	got, epoch, err := e.s.Range(e.ctx, stream, after, limit)
	if !errors.Is(err, store.ErrTrimmed) {
		e.t.Fatalf("Range(%q, %d, %d): err %v, want ErrTrimmed", stream, after, limit, err)
	}
	e.seeEpoch(stream, epoch, "Range")
	return got
}

func (e *env) head(stream string) (first, last uint64) {
	e.t.Helper()
	epoch, first, last, err := e.s.Head(e.ctx, stream)
	if err != nil {
		e.t.Fatalf("Head(%q): %v", stream, err)
	}
	e.seeEpoch(stream, epoch, "Head")
	return first, last
}

func (e *env) wantHead(stream string, first, last uint64) {
	e.t.Helper()
	f, l := e.head(stream)
	if f != first || l != last {
		e.t.Fatalf("Head(%q) = first %d, last %d; want %d, %d", stream, f, l, first, last)
	}
}

func (e *env) cursor(stream, device string) uint64 {
	e.t.Helper()
	c, err := e.s.Cursor(e.ctx, stream, device)
	if err != nil {
		e.t.Fatalf("Cursor(%q, %q): %v", stream, device, err)
	}
	return c
}

func (e *env) ack(stream, device string, seq uint64) {
	e.t.Helper()
	if err := e.s.Ack(e.ctx, stream, device, seq); err != nil {
		e.t.Fatalf("Ack(%q, %q, %d): %v", stream, device, seq, err)
	}
}

func (e *env) trim(stream string, keep int, maxAge time.Duration) {
	e.t.Helper()
	if err := e.s.Trim(e.ctx, stream, keep, maxAge); err != nil {
		e.t.Fatalf("Trim(%q, %d, %v): %v", stream, keep, maxAge, err)
	}
}

func (e *env) expire(want int) {
	e.t.Helper()
	n, err := e.s.Expire(e.ctx)
	if err != nil {
		e.t.Fatalf("Expire: %v", err)
	}
	if n != want {
		e.t.Fatalf("Expire removed %d, want %d", n, want)
	}
}

// seqs returns the sequence numbers of msgs.
func seqs(msgs []store.Message) []uint64 {
	out := make([]uint64, len(msgs))
	for i := range msgs {
		out[i] = msgs[i].Seq
	}
	return out
}

// span returns from, from+1, ..., to.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func (e *env) wantSeqs(what string, got []store.Message, want []uint64) {
	e.t.Helper()
	if g := seqs(got); !slices.Equal(g, want) {
		e.t.Fatalf("%s: seqs %v, want %v", what, g, want)
	}
}

// wantAppended compares Append's results with want, leaving out their
// epochs (env.append checks those).
func wantAppended(t *testing.T, got []store.Appended, want ...store.Appended) {
	t.Helper()
	if !slices.EqualFunc(got, want, func(g, w store.Appended) bool { return g.Seq == w.Seq && g.Duplicate == w.Duplicate }) {
		t.Fatalf("Append = %+v, want %+v", got, want)
	}
}

// sameMessage reports how got differs from want, or "".
func sameMessage(got, want store.Message) string {
	switch {
	case got.Seq != want.Seq:
		return fmt.Sprintf("seq %d, want %d", got.Seq, want.Seq)
	case got.ID != want.ID:
		return fmt.Sprintf("seq %d: id %q, want %q", got.Seq, got.ID, want.ID)
	case !bytes.Equal(got.Payload, want.Payload):
		return fmt.Sprintf("seq %d: payload %q, want %q", got.Seq, got.Payload, want.Payload)
	case !got.Time.Equal(want.Time):
		return fmt.Sprintf("seq %d: time %v, want %v", got.Seq, got.Time, want.Time)
	case !got.Expires.Equal(want.Expires):
		return fmt.Sprintf("seq %d: expires %v, want %v", got.Seq, got.Expires, want.Expires)
	}
	return ""
}

func (e *env) wantMessages(what string, got, want []store.Message) {
	e.t.Helper()
	if len(got) != len(want) {
		e.t.Fatalf("%s: %d messages %v, want %d %v", what, len(got), seqs(got), len(want), seqs(want))
	}
	for i := range got {
		if d := sameMessage(got[i], want[i]); d != "" {
			e.t.Fatalf("%s: %s", what, d)
		}
	}
}

func testAppendAssignsSequence(e *env) {
	t := e.t
	const s = "inbox/app/u1"
	wantAppended(t, e.append(s, msg("a"), msg("b"), msg("c")),
		store.Appended{Seq: 1}, store.Appended{Seq: 2}, store.Appended{Seq: 3})
	at := start.Add(-time.Hour)
	d := msg("d")
	d.Time = at
	d.Seq = 99 // ignored
	buf := d.Payload
	wantAppended(t, e.append(s, d), store.Appended{Seq: 4})
	copy(buf, "XXXXXXXX") // Append must have copied the payload
	wantAppended(t, e.append(s, msg(""), msg("")), store.Appended{Seq: 5}, store.Appended{Seq: 6})
	wantAppended(t, e.append("inbox/app/u2", msg("a")), store.Appended{Seq: 1})
	if res, err := e.s.Append(e.ctx, s); err != nil || len(res) != 0 {
		t.Fatalf("Append with no messages = %v, %v; want none, nil", res, err)
	}
	e.wantHead(s, 1, 6)
	e.wantHead("inbox/app/u2", 1, 1)

	now := start
	want := []store.Message{
		{Seq: 1, ID: "a", Payload: []byte("payload of a"), Time: now},
		{Seq: 2, ID: "b", Payload: []byte("payload of b"), Time: now},
		{Seq: 3, ID: "c", Payload: []byte("payload of c"), Time: now},
		{Seq: 4, ID: "d", Payload: []byte("payload of d"), Time: at},
		{Seq: 5, Payload: []byte("payload of "), Time: now},
		{Seq: 6, Payload: []byte("payload of "), Time: now},
	}
	got := e.rangeOK(s, 0, 100)
	e.wantMessages("Range(0, 100)", got, want)
	for _, m := range got {
		if m.Time.Location() != time.UTC {
			t.Fatalf("seq %d: time %v not in UTC", m.Seq, m.Time)
		}
	}
}

func testEmptyStream(e *env) {
	e.wantHead("nobody", 1, 0)
	if got := e.rangeOK("nobody", 0, 10); len(got) != 0 {
		e.t.Fatalf("Range of an empty stream: %v", seqs(got))
	}
	if c := e.cursor("nobody", "dev"); c != 0 {
		e.t.Fatalf("Cursor of an empty stream: %d", c)
	}
	e.trim("nobody", 1, time.Second)
	e.wantHead("nobody", 1, 0)
	e.expire(0)
}

func testRangeAfterLimit(e *env) {
	const s = "topic/app/news"
	for i := range 10 {
		e.append(s, msg(fmt.Sprint("m", i+1)))
	}
	e.wantSeqs("Range(0, 3)", e.rangeOK(s, 0, 3), span(1, 3))
	e.wantSeqs("Range(3, 4)", e.rangeOK(s, 3, 4), span(4, 7))
	e.wantSeqs("Range(8, 10)", e.rangeOK(s, 8, 10), span(9, 10))
	e.wantSeqs("Range(0, 100)", e.rangeOK(s, 0, 100), span(1, 10))
	e.wantSeqs("Range(10, 5)", e.rangeOK(s, 10, 5), nil)
	e.wantSeqs("Range(15, 5)", e.rangeOK(s, 15, 5), nil)
	got := e.rangeOK(s, 4, 1)
	e.wantMessages("Range(4, 1)", got, []store.Message{{Seq: 5, ID: "m5", Payload: []byte("payload of m5"), Time: start}})
}

func testInvalid(e *env) {
	t, ctx, s := e.t, e.ctx, e.s
	long := strings.Repeat("x", store.MaxNameLen+1)
	checks := map[string]error{}
	_, checks["Append empty stream"] = s.Append(ctx, "", msg("a"))
	_, checks["Append long stream"] = s.Append(ctx, long, msg("a"))
	_, checks["Append long id"] = s.Append(ctx, "s", msg(long))
	_, _, checks["Range empty stream"] = s.Range(ctx, "", 0, 1)
	_, _, checks["Range limit 0"] = s.Range(ctx, "s", 0, 0)
	_, _, checks["Range limit -1"] = s.Range(ctx, "s", 0, -1)
	_, _, _, checks["Head empty stream"] = s.Head(ctx, "")
	checks["Ack empty device"] = s.Ack(ctx, "s", "", 1)
	checks["Ack empty stream"] = s.Ack(ctx, "", "d", 1)
	_, checks["Cursor empty device"] = s.Cursor(ctx, "s", "")
	checks["Trim negative keep"] = s.Trim(ctx, "s", -1, 0)
	checks["Trim negative age"] = s.Trim(ctx, "s", 0, -time.Second)
	for what, err := range checks {
		if !errors.Is(err, store.ErrInvalid) {
			t.Errorf("%s: err %v, want ErrInvalid", what, err)
		}
	}
	e.wantHead("s", 1, 0)
}

func testContextDone(e *env) {
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	if _, err := e.s.Append(ctx, "s", msg("a")); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Append with a canceled context: %v", err)
	}
	if _, _, err := e.s.Range(ctx, "s", 0, 1); !errors.Is(err, context.Canceled) {
		e.t.Fatalf("Range with a canceled context: %v", err)
	}
	e.wantHead("s", 1, 0)
}

func testConcurrentAppendOneStream(e *env) {
	t := e.t
	const (
		s       = "topic/app/hot"
		writers = 16
		calls   = 30
	)
	type result struct {
		ids  []string
		seqs []uint64
	}
	results := make([]result, writers)
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for w := range writers {
		wg.Go(func() {
			<-ready
			r := &results[w]
			for c := range calls {
				batch := []store.Message{msg(fmt.Sprintf("w%d-%d", w, c))}
				if c%3 == 0 { // some calls carry two messages
					batch = append(batch, msg(fmt.Sprintf("w%d-%d+", w, c)))
				}
				res, err := e.s.Append(e.ctx, s, batch...)
				if err != nil {
					t.Errorf("writer %d: Append: %v", w, err)
					return
				}
				for i := range res {
					if res[i].Duplicate {
						t.Errorf("writer %d: %s reported duplicate", w, batch[i].ID)
					}
					if i > 0 && res[i].Seq != res[i-1].Seq+1 {
						t.Errorf("writer %d: one Append got seqs %d, %d", w, res[i-1].Seq, res[i].Seq)
					}
					r.ids = append(r.ids, batch[i].ID)
					r.seqs = append(r.seqs, res[i].Seq)
				}
			}
		})
	}
	close(ready)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	bySeq := map[uint64]string{}
	for w, r := range results {
		if !slices.IsSorted(r.seqs) {
			t.Fatalf("writer %d got seqs out of order: %v", w, r.seqs)
		}
		for i, seq := range r.seqs {
			if prev, dup := bySeq[seq]; dup {
				t.Fatalf("seq %d given to %s and %s", seq, prev, r.ids[i])
			}
			bySeq[seq] = r.ids[i]
		}
	}
	n := uint64(len(bySeq))
	e.wantHead(s, 1, n)
	got := e.rangeOK(s, 0, int(n)+10)
	e.wantSeqs("Range(0)", got, span(1, n))
	for _, m := range got {
		if m.ID != bySeq[m.Seq] {
			t.Fatalf("seq %d holds %q, Append gave it to %q", m.Seq, m.ID, bySeq[m.Seq])
		}
	}
}

func testExpiry(e *env) {
	t := e.t
	const s = "inbox/app/u1"
	exp := func(id string, d time.Duration) store.Message {
		m := msg(id)
		if d != 0 {
			m.Expires = start.Add(d)
		}
		return m
	}
	e.append(s, exp("m1", 10*time.Second), exp("m2", 0), exp("m3", 20*time.Second), exp("x", 10*time.Second))
	e.wantSeqs("before expiry", e.rangeOK(s, 0, 10), span(1, 4))
	e.expire(0)

	e.clock.Advance(10 * time.Second) // m1 and x expire exactly now
	e.wantSeqs("at m1's expiry", e.rangeOK(s, 0, 10), []uint64{2, 3})
	e.wantSeqs("Range(2) at m1's expiry", e.rangeOK(s, 2, 10), []uint64{3})
	e.wantHead(s, 1, 4) // expiry is not trimming

	// An expired message's id no longer deduplicates.
	wantAppended(t, e.append(s, exp("x", 0)), store.Appended{Seq: 5})
	e.expire(2)
	e.expire(0)
	e.wantSeqs("after Expire", e.rangeOK(s, 0, 10), []uint64{2, 3, 5})
	e.wantHead(s, 1, 5)

	e.clock.Advance(time.Hour)
	e.wantSeqs("after m3's expiry", e.rangeOK(s, 0, 10), []uint64{2, 5})
	e.expire(1)
	e.wantSeqs("after second Expire", e.rangeOK(s, 0, 10), []uint64{2, 5})
	// The new x is held and not expired: it deduplicates.
	wantAppended(t, e.append(s, exp("x", 0)), store.Appended{Seq: 5, Duplicate: true})

	// A message already expired when appended is stored but never returned.
	past := msg("past")
	past.Expires = start
	wantAppended(t, e.append(s, past), store.Appended{Seq: 6})
	e.wantSeqs("with an expired append", e.rangeOK(s, 0, 10), []uint64{2, 5})
	e.expire(1)
}

func testTrimByCount(e *env) {
	t := e.t
	const s = "topic/app/news"
	for i := range 10 {
		e.append(s, msg(fmt.Sprint("m", i+1)))
	}
	e.trim(s, 4, 0)
	e.wantHead(s, 7, 10)
	e.wantSeqs("Range(0) after trim", e.rangeTrimmed(s, 0, 100), span(7, 10))
	e.wantSeqs("Range(5) after trim", e.rangeTrimmed(s, 5, 2), span(7, 8))
	e.wantSeqs("Range(6) after trim", e.rangeOK(s, 6, 100), span(7, 10))
	e.wantSeqs("Range(8) after trim", e.rangeOK(s, 8, 100), span(9, 10))

	// A trimmed message's id no longer deduplicates; a held one does.
	wantAppended(t, e.append(s, msg("m1"), msg("m8")), store.Appended{Seq: 11}, store.Appended{Seq: 8, Duplicate: true})
	e.trim(s, 4, 0)
	e.wantHead(s, 8, 11)
	e.trim(s, 100, 0)
	e.trim(s, 0, 0)
	e.wantHead(s, 8, 11)
	e.trim(s, 1, 0)
	e.wantHead(s, 11, 11)
	e.wantMessages("Range(10) after trim to 1", e.rangeOK(s, 10, 10),
		[]store.Message{{Seq: 11, ID: "m1", Payload: []byte("payload of m1"), Time: start}})
	e.wantSeqs("Range(0) after trim to 1", e.rangeTrimmed(s, 0, 100), []uint64{11})
	wantAppended(t, e.append(s, msg("m12")), store.Appended{Seq: 12})
	e.wantHead(s, 11, 12)
}

func testTrimByAge(e *env) {
	const s = "topic/app/news"
	e.append(s, msg("m1"), msg("m2"), msg("m3"))
	e.clock.Advance(time.Minute)
	e.append(s, msg("m4"))
	e.append(s, msg("m5"))
	e.clock.Advance(10 * time.Second)

	e.trim(s, 0, 30*time.Second)
	e.wantHead(s, 4, 5)
	e.wantSeqs("Range(0) after age trim", e.rangeTrimmed(s, 0, 100), span(4, 5))
	e.wantSeqs("Range(3) after age trim", e.rangeOK(s, 3, 100), span(4, 5))
	e.trim(s, 0, 0)
	e.trim(s, 0, time.Hour)
	e.wantHead(s, 4, 5)

	e.clock.Advance(time.Minute)
	e.trim(s, 0, 30*time.Second)
	e.wantHead(s, 6, 5)
	e.wantSeqs("Range(5) after trimming all", e.rangeOK(s, 5, 100), nil)
	e.wantSeqs("Range(4) after trimming all", e.rangeTrimmed(s, 4, 100), nil)
	wantAppended(e.t, e.append(s, msg("m6")), store.Appended{Seq: 6})

	// Both limits at once: count first, then age.
	const b = "topic/app/both"
	for i := range 5 {
		e.append(b, msg(fmt.Sprint("old", i)))
	}
	e.clock.Advance(time.Hour)
	for i := range 5 {
		e.append(b, msg(fmt.Sprint("new", i)))
	}
	e.trim(b, 8, time.Minute)
	e.wantHead(b, 6, 10)
}

func testCursors(e *env) {
	t := e.t
	const s, other = "inbox/app/u1", "inbox/app/u2"
	e.append(s, msg("a"), msg("b"), msg("c"), msg("d"), msg("e"))
	e.ack(s, "phone", 5)
	e.ack(s, "laptop", 3)
	e.ack(other, "phone", 1)
	e.ack(s, "phone", 2) // backwards: ignored
	e.ack(s, "laptop", 3)
	want := map[[2]string]uint64{
		{s, "phone"}: 5, {s, "laptop"}: 3, {s, "tablet"}: 0,
		{other, "phone"}: 1, {other, "laptop"}: 0,
	}
	for k, w := range want {
		if got := e.cursor(k[0], k[1]); got != w {
			t.Fatalf("Cursor(%q, %q) = %d, want %d", k[0], k[1], got, w)
		}
	}
	e.ack(s, "laptop", 4)
	if got := e.cursor(s, "laptop"); got != 4 {
		t.Fatalf("Cursor after Ack 4 = %d", got)
	}

	// Concurrent acks of one device end at the maximum.
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if err := e.s.Ack(e.ctx, s, "watch", uint64(i+1)); err != nil {
				t.Errorf("Ack: %v", err)
			}
		})
	}
	wg.Wait()
	if got := e.cursor(s, "watch"); got != 20 {
		t.Fatalf("Cursor after concurrent acks = %d, want 20", got)
	}
}

func testIdempotency(e *env) {
	t := e.t
	const s = "inbox/app/u1"
	wantAppended(t, e.append(s, msg("a")), store.Appended{Seq: 1})
	again := msg("a")
	again.Payload = []byte("a retry with other bytes")
	wantAppended(t, e.append(s, again), store.Appended{Seq: 1, Duplicate: true})
	e.wantHead(s, 1, 1)
	wantAppended(t, e.append(s, msg("b"), msg("a"), msg("b"), msg("c")),
		store.Appended{Seq: 2}, store.Appended{Seq: 1, Duplicate: true},
		store.Appended{Seq: 2, Duplicate: true}, store.Appended{Seq: 3})
	e.wantHead(s, 1, 3)
	e.wantMessages("Range(0)", e.rangeOK(s, 0, 10), []store.Message{
		{Seq: 1, ID: "a", Payload: []byte("payload of a"), Time: start},
		{Seq: 2, ID: "b", Payload: []byte("payload of b"), Time: start},
		{Seq: 3, ID: "c", Payload: []byte("payload of c"), Time: start},
	})
	// Ids are per stream.
	wantAppended(t, e.append("inbox/app/u2", msg("a")), store.Appended{Seq: 1})
	// An unexpired message with a deadline deduplicates.
	m := msg("d")
	m.Expires = start.Add(time.Minute)
	wantAppended(t, e.append(s, m), store.Appended{Seq: 4})
	e.clock.Advance(30 * time.Second)
	wantAppended(t, e.append(s, m), store.Appended{Seq: 4, Duplicate: true})
}

func testLookup(e *env) {
	t := e.t
	const s = "inbox/app/u1"
	lookup := func(stream, id string) (uint64, bool) {
		t.Helper()
		seq, ok, err := e.s.Lookup(e.ctx, stream, id)
		if err != nil {
			t.Fatalf("Lookup(%q, %q): %v", stream, id, err)
		}
		return seq, ok
	}
	if _, ok := lookup("inbox/app/none", "a"); ok {
		t.Fatal("found an id in a stream that does not exist")
	}
	m := msg("b")
	m.Expires = start.Add(time.Minute)
	e.append(s, msg("a"), m)
	if seq, ok := lookup(s, "a"); !ok || seq != 1 {
		t.Fatalf("Lookup(a) = %d, %v; want 1, true", seq, ok)
	}
	if seq, ok := lookup(s, "b"); !ok || seq != 2 {
		t.Fatalf("Lookup(b) = %d, %v; want 2, true", seq, ok)
	}
	if _, ok := lookup(s, "zz"); ok {
		t.Fatal("found an id never appended")
	}
	if _, ok := lookup("inbox/app/u2", "a"); ok {
		t.Fatal("ids leaked across streams")
	}
	e.clock.Advance(time.Minute)
	if _, ok := lookup(s, "b"); ok {
		t.Fatal("found an expired message")
	}
	e.trim(s, 1, 0) // keeps only seq 2
	if _, ok := lookup(s, "a"); ok {
		t.Fatal("found a trimmed message")
	}
}

func testConcurrentRetries(e *env) {
	t := e.t
	const (
		s       = "inbox/app/u1"
		rounds  = 5
		retries = 16
	)
	for r := range rounds {
		id := fmt.Sprint("id", r)
		res := make([]store.Appended, retries)
		var wg sync.WaitGroup
		ready := make(chan struct{})
		for i := range retries {
			wg.Go(func() {
				<-ready
				got, err := e.s.Append(e.ctx, s, msg(id))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				res[i] = got[0]
			})
		}
		close(ready)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		originals := 0
		for _, a := range res {
			if a.Seq != uint64(r+1) {
				t.Fatalf("round %d: a retry got seq %d, want %d", r, a.Seq, r+1)
			}
			if !a.Duplicate {
				originals++
			}
		}
		if originals != 1 {
			t.Fatalf("round %d: %d appends were not duplicates, want 1", r, originals)
		}
	}
	e.wantHead(s, 1, rounds)
	e.wantSeqs("Range(0)", e.rangeOK(s, 0, 100), span(1, rounds))
}

// testEpoch: a stream's epoch is the same from Head before its first
// append, in Append's results, in Range and in Head, through trims and
// expiry; another store's stream of the same name has another epoch.
func testEpoch(e *env) {
	t := e.t
	e.head("a") // before the first append: the epoch it will get
	e.append("a", msg("1"))
	e.rangeOK("a", 0, 1)
	e.head("a")
	e.trim("a", 1, 0)
	e.expire(0)
	e.append("a", msg("2"))
	e.head("a")
	other := e.open()
	epoch, _, _, err := other.Head(e.ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if epoch == e.epochs["a"] {
		t.Fatalf("streams of two new stores share epoch %q", epoch)
	}
}

func testManyStreams(e *env) {
	t := e.t
	const (
		workers = 8
		streams = 12
		iters   = 24
	)
	name := func(i int) string { return fmt.Sprint("stream/", i) }
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range iters {
				s := name((w*7 + i) % streams)
				res, err := e.s.Append(e.ctx, s, msg(fmt.Sprintf("w%d-%d", w, i)))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				if err := e.s.Ack(e.ctx, s, fmt.Sprint("dev", w), res[0].Seq); err != nil {
					t.Errorf("Ack: %v", err)
					return
				}
				// Whatever a reader sees is contiguous: no gap is ever
				// visible, even while appends are in flight.
				got, _, err := e.s.Range(e.ctx, s, 0, 1000)
				if err != nil {
					t.Errorf("Range: %v", err)
					return
				}
				if g := seqs(got); len(g) == 0 || !slices.Equal(g, span(1, uint64(len(g)))) || g[len(g)-1] < res[0].Seq {
					t.Errorf("Range(%q) after appending seq %d: %v", s, res[0].Seq, g)
					return
				}
				if _, _, _, err := e.s.Head(e.ctx, s); err != nil {
					t.Errorf("Head: %v", err)
					return
				}
			}
		})
	}
	// Maintenance runs alongside, changing nothing here.
	wg.Go(func() {
		for i := range 20 {
			if _, err := e.s.Expire(e.ctx); err != nil {
				t.Errorf("Expire: %v", err)
				return
			}
			if err := e.s.Trim(e.ctx, name(i%streams), 1000, 0); err != nil {
				t.Errorf("Trim: %v", err)
				return
			}
		}
	})
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	total := uint64(0)
	for i := range streams {
		_, last := e.head(name(i))
		e.wantSeqs(name(i), e.rangeOK(name(i), 0, 1000), span(1, last))
		total += last
	}
	if total != workers*iters {
		t.Fatalf("%d messages in all streams, want %d", total, workers*iters)
	}
}

// testLarge works on more messages than implementations are likely to
// handle in one internal step (batches, chunks, pages).
func testLarge(e *env) {
	const (
		s = "topic/app/large"
		n = 10000
	)
	batch := make([]store.Message, n/2)
	for round := range 2 {
		for i := range batch {
			batch[i] = msg(fmt.Sprint(round*n/2 + i))
			if i%2 == 0 {
				batch[i].Expires = start.Add(time.Minute)
			}
		}
		e.append(s, batch...)
	}
	e.wantHead(s, 1, n)
	e.clock.Advance(time.Minute)
	e.expire(n / 2)
	var even []uint64
	for seq := uint64(2); seq <= n; seq += 2 {
		even = append(even, seq)
	}
	e.wantSeqs("after expiring odd seqs", e.rangeOK(s, 0, n), even)
	e.trim(s, 100, 0)
	e.wantHead(s, n-99, n)
	e.wantSeqs("after trim", e.rangeTrimmed(s, 0, n), even[len(even)-50:])
	e.wantSeqs("Range(n-100) after trim", e.rangeOK(s, n-100, 10), even[len(even)-50:len(even)-40])
}

func testClosed(e *env) {
	t, ctx, s := e.t, e.ctx, e.s
	e.append("a", msg("1"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	checks := map[string]error{}
	_, checks["Append"] = s.Append(ctx, "a", msg("2"))
	_, _, checks["Range"] = s.Range(ctx, "a", 0, 1)
	_, _, _, checks["Head"] = s.Head(ctx, "a")
	checks["Ack"] = s.Ack(ctx, "a", "d", 1)
	_, checks["Cursor"] = s.Cursor(ctx, "a", "d")
	checks["Trim"] = s.Trim(ctx, "a", 1, 0)
	_, checks["Expire"] = s.Expire(ctx)
	for what, err := range checks {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: err %v, want ErrClosed", what, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func testReopen(e *env) {
	t := e.t
	const a, b = "inbox/app/u1", "topic/app/news"
	m3 := msg("m3")
	m3.Expires = start.Add(time.Minute)
	m4 := msg("m4")
	m4.Time = start.Add(-time.Hour)
	e.append(a, msg("m1"), msg("m2"), m3, m4, msg("m5"))
	e.append(b, msg("n1"), msg("n2"))
	e.trim(a, 3, 0)
	e.trim(b, 1, 0)
	e.ack(a, "phone", 4)
	e.ack(a, "laptop", 2)
	before := e.rangeTrimmed(a, 0, 10)
	e.wantSeqs("before reopen", before, span(3, 5))

	e.reopen() // epochs are checked to stay as they were
	e.wantHead(a, 3, 5)
	e.wantHead(b, 2, 2)
	e.wantMessages("Range after reopen", e.rangeTrimmed(a, 0, 10), before)
	e.wantMessages("Range(2) after reopen", e.rangeOK(a, 2, 10), before)
	if p, l := e.cursor(a, "phone"), e.cursor(a, "laptop"); p != 4 || l != 2 {
		t.Fatalf("cursors after reopen: phone %d, laptop %d; want 4, 2", p, l)
	}
	// Sequence counters and the id index survive.
	wantAppended(t, e.append(a, msg("m4"), msg("m6"), msg("m1")),
		store.Appended{Seq: 4, Duplicate: true}, store.Appended{Seq: 6}, store.Appended{Seq: 7})
	wantAppended(t, e.append(b, msg("n3")), store.Appended{Seq: 3})
	// So does the expiry index.
	e.clock.Advance(time.Minute)
	e.expire(1)
	e.wantSeqs("after expiry", e.rangeTrimmed(a, 0, 10), []uint64{4, 5, 6, 7})

	e.reopen()
	e.wantHead(a, 3, 7)
	e.wantSeqs("after second reopen", e.rangeOK(a, 2, 10), []uint64{4, 5, 6, 7})
	e.expire(0)
}

// testDataLoss: a stream whose data vanished behind the store's back is
// in a new epoch from then on, in every answer; an id of the lost data is
// new again; a cursor does not hide what is appended after the loss; the
// other streams are untouched.
func testDataLoss(e *env) {
	t := e.t
	const s, other = "inbox/app/lost", "inbox/app/kept"
	e.append(s, msg("a"), msg("b"), msg("c"))
	e.append(other, msg("x"), msg("y"))
	e.ack(s, "phone", 3)
	e.ack(other, "phone", 1)
	old := e.epochs[s]

	e.cfg.loss(t, e.s, s)
	delete(e.epochs, s)
	epoch, first, last, err := e.s.Head(e.ctx, s)
	if err != nil {
		t.Fatalf("Head after the loss: %v", err)
	}
	if epoch == old {
		t.Fatalf("Head after the loss: epoch %q is the lost data's", epoch)
	}
	e.seeEpoch(s, epoch, "Head after the loss")
	if first != last+1 {
		t.Fatalf("Head after the loss = first %d, last %d; nothing is held", first, last)
	}
	res := e.append(s, msg("b"), msg("d"))
	if res[0].Duplicate || res[1].Duplicate || res[1].Seq != res[0].Seq+1 || res[0].Seq != last+1 {
		t.Fatalf("Append after the loss (last %d) = %+v; want two new messages after last", last, res)
	}
	if c := e.cursor(s, "phone"); c >= res[0].Seq {
		t.Fatalf("cursor %d after the loss hides the new message %d", c, res[0].Seq)
	}
	got, epoch, err := e.s.Range(e.ctx, s, 0, 10)
	if err != nil && !errors.Is(err, store.ErrTrimmed) {
		t.Fatalf("Range after the loss: %v", err)
	}
	e.seeEpoch(s, epoch, "Range after the loss")
	e.wantSeqs("Range after the loss", got, []uint64{res[0].Seq, res[1].Seq})
	if got[0].ID != "b" || got[1].ID != "d" {
		t.Fatalf("Range after the loss: ids %q, %q; want b, d", got[0].ID, got[1].ID)
	}
	e.wantHead(s, first, res[1].Seq)

	// The other stream keeps its messages, cursor and epoch.
	e.wantSeqs("the other stream", e.rangeOK(other, 0, 10), span(1, 2))
	if c := e.cursor(other, "phone"); c != 1 {
		t.Fatalf("the other stream's cursor = %d, want 1", c)
	}
	wantAppended(t, e.append(other, msg("y"), msg("z")), store.Appended{Seq: 2, Duplicate: true}, store.Appended{Seq: 3})

	if e.cfg.reopen != nil {
		e.reopen() // the new epoch is as durable as the old one was
		e.wantHead(s, first, res[1].Seq)
		e.wantHead(other, 1, 3)
	}
}
