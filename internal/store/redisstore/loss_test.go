package redisstore_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/redisstore"
)

// TestPartialLoss deletes some of a stream's keys behind the store (as an
// eviction or an operator would) and checks what the next operations
// make of it: a new epoch whenever a reader could have been owed
// something that is gone, seqs that continue after everything still
// visible, what is still held readable, and no new epoch when nothing a
// reader was owed is gone.
//
// The stream before the loss: a b c d at seqs 1-4, trimmed to 2-4, phone's
// cursor at 2.
func TestPartialLoss(t *testing.T) {
	addr := sharedRedis(t)
	const st = "inbox/app/u1"
	type want struct {
		newEpoch    bool
		first, last uint64   // Head after the loss
		held        []uint64 // Range(0) after the loss
		dupB        bool     // appending b again is a duplicate of 2
		cursor      uint64
	}
	cases := []struct {
		name string
		keys []int // indexes into StreamKeys: meta, msgs, ids, acks
		gen  bool  // delete the prefix's generation key
		want want
	}{
		// Messages and ids are held: the stream goes on after 4, with
		// what it holds, in a new epoch (the meta could have said more).
		{"meta", []int{0}, false, want{true, 2, 4, []uint64{2, 3, 4}, true, 2}},
		// Every held message is gone: nothing is held, seqs continue.
		{"msgs", []int{1}, false, want{true, 5, 4, nil, false, 2}},
		// The id index is rebuilt from the messages: same epoch.
		{"ids", []int{2}, false, want{false, 2, 4, []uint64{2, 3, 4}, true, 2}},
		// Lost cursors only cause redelivery: same epoch.
		{"acks", []int{3}, false, want{false, 2, 4, []uint64{2, 3, 4}, true, 0}},
		// The id index still shows seq 4.
		{"meta+msgs", []int{0, 1}, false, want{true, 5, 4, nil, false, 2}},
		// Only the cursor (2) is left: seqs continue after it, so the
		// cursor hides nothing new.
		{"meta+msgs+ids", []int{0, 1, 2}, false, want{true, 3, 2, nil, false, 2}},
		// A generation that changed under the meta: a new epoch, the data
		// as it was.
		{"generation", nil, true, want{true, 2, 4, []uint64{2, 3, 4}, true, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			prefix := newPrefix(t, addr)
			s := open(t, addr, prefix, time.Now)
			other := open(t, addr, prefix, time.Now) // another node
			res, err := s.Append(ctx, st, store.Message{ID: "a"}, store.Message{ID: "b"}, store.Message{ID: "c"}, store.Message{ID: "d"})
			if err != nil {
				t.Fatal(err)
			}
			old := res[0].Epoch
			if err := s.Trim(ctx, st, 3, 0); err != nil {
				t.Fatal(err)
			}
			if err := s.Ack(ctx, st, "phone", 2); err != nil {
				t.Fatal(err)
			}

			keys := s.StreamKeys(st)
			var del []string
			for _, i := range tc.keys {
				del = append(del, keys[i])
			}
			if tc.gen {
				del = append(del, prefix+"gen")
			}
			deleteKeys(t, addr, del...)

			w := tc.want
			epoch, first, last, err := s.Head(ctx, st)
			if err != nil {
				t.Fatal(err)
			}
			if (epoch != old) != w.newEpoch || first != w.first || last != w.last {
				t.Fatalf("Head = epoch changed %v, first %d, last %d; want %v, %d, %d", epoch != old, first, last, w.newEpoch, w.first, w.last)
			}
			// Another node sees the same: the new epoch was written once.
			if e2, f2, l2, err := other.Head(ctx, st); err != nil || e2 != epoch || f2 != first || l2 != last {
				t.Fatalf("the other node's Head = %s, %d, %d, %v; want %s, %d, %d", e2, f2, l2, err, epoch, first, last)
			}
			msgs, ep, err := s.Range(ctx, st, 0, 10)
			if first > 1 && !errors.Is(err, store.ErrTrimmed) || first == 1 && err != nil || ep != epoch {
				t.Fatalf("Range(0) = epoch %s, err %v; want epoch %s and ErrTrimmed iff first > 1", ep, err, epoch)
			}
			if got := seqsOf(msgs); !slices.Equal(got, w.held) {
				t.Fatalf("Range(0) = %v, want %v", got, w.held)
			}
			if c, err := s.Cursor(ctx, st, "phone"); err != nil || c != w.cursor {
				t.Fatalf("Cursor = %d, %v; want %d", c, err, w.cursor)
			}
			res, err = other.Append(ctx, st, store.Message{ID: "b"}, store.Message{ID: "e"})
			if err != nil {
				t.Fatal(err)
			}
			if res[0].Duplicate != w.dupB || w.dupB && res[0].Seq != 2 {
				t.Fatalf("appending b again = %+v, want duplicate %v", res[0], w.dupB)
			}
			next := last + 1
			if !w.dupB {
				next++ // b took last+1
			}
			if r := res[1]; r.Duplicate || r.Seq != next || r.Epoch != epoch {
				t.Fatalf("appending e = %+v, want seq %d in epoch %s", r, next, epoch)
			}
			if lost := w.newEpoch; lost {
				// Stable from now on: the next operations keep the epoch.
				if e, _, _, err := s.Head(ctx, st); err != nil || e != epoch {
					t.Fatalf("Head after the recovery = %s, %v; want %s", e, err, epoch)
				}
			}
		})
	}
}

func seqsOf(msgs []store.Message) []uint64 {
	var out []uint64
	for _, m := range msgs {
		out = append(out, m.Seq)
	}
	return out
}

// TestExpiryIndexStale: a stream that lost its messages leaves members in
// the expiry index; Expire drops them without counting them, and the
// stream's new messages expire as they should.
func TestExpiryIndexStale(t *testing.T) {
	addr := sharedRedis(t)
	ctx := t.Context()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := open(t, addr, newPrefix(t, addr), clock)
	const st = "topic/app/news"
	exp := store.Message{ID: "x", Expires: now.Add(time.Minute)}
	if _, err := s.Append(ctx, st, exp, store.Message{ID: "y", Expires: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	deleteKeys(t, addr, s.StreamKeys(st)[1]) // the messages
	res, err := s.Append(ctx, st, store.Message{ID: "x", Expires: now.Add(time.Hour)})
	if err != nil || res[0].Duplicate || res[0].Seq != 3 {
		t.Fatalf("Append after the loss = %+v, %v; want seq 3", res, err)
	}
	now = now.Add(time.Minute)
	if n, err := s.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("Expire of lost messages = %d, %v; want 0", n, err)
	}
	now = now.Add(time.Hour)
	if n, err := s.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("Expire = %d, %v; want 1", n, err)
	}
	if n, err := redisZCard(t, addr, s); err != nil || n != 0 {
		t.Fatalf("expiry index holds %d members after Expire (%v)", n, err)
	}
}

// redisZCard returns the size of s's expiry index.
func redisZCard(t *testing.T, addr string, s *redisstore.Store) (int64, error) {
	rdb := newClient(addr)
	defer rdb.Close()
	return rdb.ZCard(t.Context(), s.Prefix()+"expiry").Result()
}
