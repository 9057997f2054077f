package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/store"
)

func (e *env) appendMulti(appends ...store.StreamAppend) [][]store.Appended {
	e.t.Helper()
	res, err := e.s.AppendMulti(e.ctx, appends)
	if err != nil {
		e.t.Fatalf("AppendMulti(%d parts): %v", len(appends), err)
	}
	if len(res) != len(appends) {
		e.t.Fatalf("AppendMulti(%d parts) returned %d results", len(appends), len(res))
	}
	for i := range appends {
		if len(res[i]) != len(appends[i].Msgs) {
			e.t.Fatalf("AppendMulti part %d (%q): %d messages, %d results", i, appends[i].Stream, len(appends[i].Msgs), len(res[i]))
		}
	}
	return res
}

func part(stream string, msgs ...store.Message) store.StreamAppend {
	return store.StreamAppend{Stream: stream, Msgs: msgs}
}

func testAppendMulti(e *env) {
	t := e.t
	const a, b, c = "inbox/app/u1", "inbox/app/u2", "inbox/app/u3"
	wantAppended(t, e.append(a, msg("x")), store.Appended{Seq: 1})

	at := start.Add(-time.Hour)
	d := msg("d")
	d.Time = at
	d.Expires = start.Add(time.Hour)
	res := e.appendMulti(
		part(a, msg("a1"), msg("a2")),
		part(b, msg("b1")),
		part(c),
		part(b, d, msg("")),
	)
	wantAppended(t, res[0], store.Appended{Seq: 2}, store.Appended{Seq: 3})
	wantAppended(t, res[1], store.Appended{Seq: 1})
	wantAppended(t, res[2])
	wantAppended(t, res[3], store.Appended{Seq: 2}, store.Appended{Seq: 3})
	e.wantHead(a, 1, 3)
	e.wantHead(b, 1, 3)
	e.wantHead(c, 1, 0)
	e.wantMessages("Range(a)", e.rangeOK(a, 0, 10), []store.Message{
		{Seq: 1, ID: "x", Payload: []byte("payload of x"), Time: start},
		{Seq: 2, ID: "a1", Payload: []byte("payload of a1"), Time: start},
		{Seq: 3, ID: "a2", Payload: []byte("payload of a2"), Time: start},
	})
	e.wantMessages("Range(b)", e.rangeOK(b, 0, 10), []store.Message{
		{Seq: 1, ID: "b1", Payload: []byte("payload of b1"), Time: start},
		{Seq: 2, ID: "d", Payload: []byte("payload of d"), Time: at, Expires: start.Add(time.Hour)},
		{Seq: 3, Payload: []byte("payload of "), Time: start},
	})

	// Nothing to append.
	for _, appends := range [][]store.StreamAppend{nil, {part(a)}, {part(a), part(c)}} {
		res, err := e.s.AppendMulti(e.ctx, appends)
		if err != nil || len(res) != len(appends) {
			t.Fatalf("AppendMulti(%d empty parts) = %v, %v", len(appends), res, err)
		}
		for i := range res {
			if len(res[i]) != 0 {
				t.Fatalf("AppendMulti(%d empty parts) = %v", len(appends), res)
			}
		}
	}
	e.wantHead(a, 1, 3)
	e.wantHead(c, 1, 0)

	// Appends keep numbering after AppendMulti, and the other way round.
	wantAppended(t, e.append(b, msg("b4")), store.Appended{Seq: 4})
	res = e.appendMulti(part(b, msg("b5")), part(a, msg("a4")))
	wantAppended(t, res[0], store.Appended{Seq: 5})
	wantAppended(t, res[1], store.Appended{Seq: 4})

	if e.cfg.reopen == nil {
		return
	}
	// Counters and ids written by AppendMulti survive a restart.
	e.reopen()
	e.wantHead(a, 1, 4)
	e.wantHead(b, 1, 5)
	res = e.appendMulti(part(a, msg("a4"), msg("a5")), part(b, msg("b1"), msg("b6")))
	wantAppended(t, res[0], store.Appended{Seq: 4, Duplicate: true}, store.Appended{Seq: 5})
	wantAppended(t, res[1], store.Appended{Seq: 1, Duplicate: true}, store.Appended{Seq: 6})
}

func testAppendMultiIdempotency(e *env) {
	t := e.t
	const a, b = "inbox/app/u1", "inbox/app/u2"
	e.append(a, msg("held"))

	// Within one part, across parts of one stream, against what the
	// stream holds; ids are per stream.
	res := e.appendMulti(
		part(a, msg("m1"), msg("m1"), msg("held")),
		part(b, msg("m1"), msg("held")),
		part(a, msg("m2"), msg("m1")),
		part(b, msg("m1")),
	)
	wantAppended(t, res[0], store.Appended{Seq: 2}, store.Appended{Seq: 2, Duplicate: true}, store.Appended{Seq: 1, Duplicate: true})
	wantAppended(t, res[1], store.Appended{Seq: 1}, store.Appended{Seq: 2})
	wantAppended(t, res[2], store.Appended{Seq: 3}, store.Appended{Seq: 2, Duplicate: true})
	wantAppended(t, res[3], store.Appended{Seq: 1, Duplicate: true})
	e.wantHead(a, 1, 3)
	e.wantHead(b, 1, 2)

	// A retry of the whole call stores nothing new and returns the same
	// sequences.
	retry := e.appendMulti(
		part(a, msg("m1"), msg("m1"), msg("held")),
		part(b, msg("m1"), msg("held")),
		part(a, msg("m2"), msg("m1")),
		part(b, msg("m1")),
	)
	for i := range retry {
		for j := range retry[i] {
			if retry[i][j].Seq != res[i][j].Seq || !retry[i][j].Duplicate {
				t.Fatalf("retry part %d message %d: %+v, first call %+v", i, j, retry[i][j], res[i][j])
			}
		}
	}
	e.wantHead(a, 1, 3)
	e.wantHead(b, 1, 2)

	// Across calls, mixed with Append.
	wantAppended(t, e.append(b, msg("m2")), store.Appended{Seq: 3})
	res = e.appendMulti(part(b, msg("m2"), msg("m3")), part(a, msg("m3")))
	wantAppended(t, res[0], store.Appended{Seq: 3, Duplicate: true}, store.Appended{Seq: 4})
	wantAppended(t, res[1], store.Appended{Seq: 4})
	wantAppended(t, e.append(a, msg("m3")), store.Appended{Seq: 4, Duplicate: true})

	// Trimmed and expired ids no longer deduplicate.
	x := msg("x")
	x.Expires = start.Add(time.Minute)
	e.appendMulti(part(a, x))
	e.trim(a, 1, 0)
	e.clock.Advance(time.Minute)
	res = e.appendMulti(part(a, msg("m1"), msg("x")))
	wantAppended(t, res[0], store.Appended{Seq: 6}, store.Appended{Seq: 7})
}

func testAppendMultiInvalid(e *env) {
	t, ctx, s := e.t, e.ctx, e.s
	long := strings.Repeat("x", store.MaxNameLen+1)
	checks := map[string][]store.StreamAppend{
		"empty stream":           {part("ok", msg("a")), part("", msg("a"))},
		"empty stream, no msgs":  {part("")},
		"long stream":            {part(long, msg("a"))},
		"long id":                {part("ok", msg("a")), part("ok2", msg("b"), msg(long))},
		"long id, after a valid": {part("ok", msg("a"), msg(long))},
	}
	for what, appends := range checks {
		if _, err := s.AppendMulti(ctx, appends); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("AppendMulti %s: err %v, want ErrInvalid", what, err)
		}
	}
	// Nothing of an invalid call is stored.
	e.wantHead("ok", 1, 0)
	e.wantHead("ok2", 1, 0)

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.AppendMulti(cctx, []store.StreamAppend{part("ok", msg("a"))}); !errors.Is(err, context.Canceled) {
		t.Fatalf("AppendMulti with a canceled context: %v", err)
	}
	e.wantHead("ok", 1, 0)
}

// testAppendMultiConcurrent runs AppendMulti calls over overlapping sets
// of streams, listed in different orders, alongside Appends, Trims and
// Expires on the same streams: nothing deadlocks, every id is stored once,
// and each stream is numbered without gaps.
func testAppendMultiConcurrent(e *env) {
	t := e.t
	const (
		streams = 6
		multis  = 6
		singles = 4
		calls   = 20
	)
	name := func(i int) string { return fmt.Sprint("inbox/app/u", i%streams) }
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	var mu sync.Mutex
	got := map[string]map[string]uint64{} // stream → id → seq
	record := func(stream, id string, a store.Appended) {
		mu.Lock()
		defer mu.Unlock()
		ids := got[stream]
		if ids == nil {
			ids = map[string]uint64{}
			got[stream] = ids
		}
		if seq, ok := ids[id]; ok {
			if !a.Duplicate || seq != a.Seq {
				t.Errorf("%s %s: %+v, earlier seq %d", stream, id, a, seq)
			}
			return
		}
		if a.Duplicate {
			t.Errorf("%s %s: duplicate of %d, never stored", stream, id, a.Seq)
		}
		ids[id] = a.Seq
	}
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for w := range multis {
		wg.Go(func() {
			<-ready
			for c := range calls {
				// Three streams, starting at a different one each time,
				// in either direction; one id appended twice.
				var appends []store.StreamAppend
				for k := range 3 {
					i := w + c + k
					if (w+c)%2 == 1 {
						i = w + c - k + streams
					}
					id := fmt.Sprintf("m%d-%d-%d", w, c, k)
					appends = append(appends, part(name(i), msg(id), msg(fmt.Sprintf("m%d-%d", w, c))))
				}
				res, err := e.s.AppendMulti(ctx, appends)
				if err != nil {
					t.Errorf("AppendMulti: %v", err)
					return
				}
				for i, p := range appends {
					if len(res[i]) != len(p.Msgs) {
						t.Errorf("AppendMulti part %d: %d results for %d messages", i, len(res[i]), len(p.Msgs))
						return
					}
					for j := range p.Msgs {
						record(p.Stream, p.Msgs[j].ID, res[i][j])
					}
				}
			}
		})
	}
	for w := range singles {
		wg.Go(func() {
			<-ready
			for c := range calls {
				s, id := name(w+c), fmt.Sprintf("s%d-%d", w, c)
				res, err := e.s.Append(ctx, s, msg(id))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				record(s, id, res[0])
			}
		})
	}
	wg.Go(func() {
		<-ready
		for i := range calls {
			if err := e.s.Trim(ctx, name(i), 1000, 0); err != nil {
				t.Errorf("Trim: %v", err)
				return
			}
			if _, err := e.s.Expire(ctx); err != nil {
				t.Errorf("Expire: %v", err)
				return
			}
		}
	})
	close(ready)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	total := 0
	for i := range streams {
		s := name(i)
		ids := got[s]
		bySeq := map[uint64]string{}
		for id, seq := range ids {
			if prev, dup := bySeq[seq]; dup {
				t.Fatalf("%s: seq %d given to %s and %s", s, seq, prev, id)
			}
			bySeq[seq] = id
		}
		n := uint64(len(ids))
		e.wantHead(s, 1, n)
		msgs := e.rangeOK(s, 0, int(n)+10)
		e.wantSeqs(s, msgs, span(1, n))
		for _, m := range msgs {
			if m.ID != bySeq[m.Seq] {
				t.Fatalf("%s: seq %d holds %q, the call got it for %q", s, m.Seq, m.ID, bySeq[m.Seq])
			}
		}
		total += len(ids)
	}
	// Per AppendMulti call, three parts on three streams with two ids
	// each; one id per Append.
	if want := multis*calls*3*2 + singles*calls; total != want {
		t.Fatalf("%d messages stored, want %d", total, want)
	}
}

// testAppendMultiWaitsForAppend checks that AppendMulti and Append on the
// same stream, started together many times, all complete with distinct
// sequences: queued Appends are not lost while AppendMulti holds a stream.
func testAppendMultiWaitsForAppend(e *env) {
	t := e.t
	const rounds = 30
	a, b := "topic/app/a", "topic/app/b"
	want := uint64(0)
	for r := range rounds {
		var wg sync.WaitGroup
		ready := make(chan struct{})
		seqs := make(chan uint64, 8)
		for k := range 3 {
			wg.Go(func() {
				<-ready
				res, err := e.s.Append(e.ctx, a, msg(fmt.Sprintf("s%d-%d", r, k)))
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				seqs <- res[0].Seq
			})
		}
		wg.Go(func() {
			<-ready
			res, err := e.s.AppendMulti(e.ctx, []store.StreamAppend{part(b, msg(fmt.Sprint("b", r))), part(a, msg(fmt.Sprint("m", r)))})
			if err != nil {
				t.Errorf("AppendMulti: %v", err)
				return
			}
			seqs <- res[1][0].Seq
		})
		close(ready)
		wg.Wait()
		close(seqs)
		if t.Failed() {
			t.FailNow()
		}
		var got []uint64
		for s := range seqs {
			got = append(got, s)
		}
		slices.Sort(got)
		if !slices.Equal(got, span(want+1, want+4)) {
			t.Fatalf("round %d: seqs %v, want %v", r, got, span(want+1, want+4))
		}
		want += 4
	}
	e.wantHead(a, 1, want)
	e.wantHead(b, 1, rounds)
}

func testAppendMultiClosed(e *env) {
	e.append("a", msg("1"))
	if err := e.s.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	if _, err := e.s.AppendMulti(e.ctx, []store.StreamAppend{part("a", msg("2")), part("b", msg("1"))}); !errors.Is(err, store.ErrClosed) {
		e.t.Fatalf("AppendMulti after Close: err %v, want ErrClosed", err)
	}
}
