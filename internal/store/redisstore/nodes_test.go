package redisstore_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/redisstore"
)

// TestTwoNodes runs appenders on two Stores (two nodes, each with its own
// client) on one stream. Each call appends an id of its own and an id
// every appender sends in the same round, as retries of one push through
// both nodes would. Seqs are unique and contiguous, each shared id is
// stored once and every other call gets its seq as a duplicate, and both
// nodes read the same stream; concurrent acks from both end at the
// largest.
func TestTwoNodes(t *testing.T) {
	addr := sharedRedis(t)
	prefix := newPrefix(t, addr)
	nodes := []*redisstore.Store{open(t, addr, prefix, time.Now), open(t, addr, prefix, time.Now)}
	ctx := t.Context()
	const (
		st      = "topic/app/hot"
		perNode = 8
		rounds  = 40
	)
	type result struct {
		id  string
		res store.Appended
	}
	var (
		mu  sync.Mutex
		got []result
		wg  sync.WaitGroup
	)
	ready := make(chan struct{})
	for n, s := range nodes {
		for g := range perNode {
			wg.Go(func() {
				<-ready
				for r := range rounds {
					own, shared := fmt.Sprintf("n%d-g%d-r%d", n, g, r), fmt.Sprint("shared-", r)
					res, err := s.Append(ctx, st, store.Message{ID: own}, store.Message{ID: shared})
					if err != nil {
						t.Errorf("node %d: Append: %v", n, err)
						return
					}
					if err := s.Ack(ctx, st, "phone", res[0].Seq); err != nil {
						t.Errorf("node %d: Ack: %v", n, err)
						return
					}
					mu.Lock()
					got = append(got, result{own, res[0]}, result{shared, res[1]})
					mu.Unlock()
				}
			})
		}
	}
	close(ready)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	bySeq := map[uint64]string{}
	byID := map[string]uint64{}
	epoch := got[0].res.Epoch
	for _, r := range got {
		if r.res.Epoch != epoch {
			t.Fatalf("%s: epoch %s, others %s", r.id, r.res.Epoch, epoch)
		}
		if seq, ok := byID[r.id]; ok {
			if !r.res.Duplicate || r.res.Seq != seq {
				t.Fatalf("%s: %+v, stored earlier at %d", r.id, r.res, seq)
			}
			continue
		}
		if r.res.Duplicate {
			// The first result recorded for an id may be a duplicate
			// (results are recorded after the call): check it later.
			continue
		}
		if prev, ok := bySeq[r.res.Seq]; ok {
			t.Fatalf("seq %d given to %s and %s", r.res.Seq, prev, r.id)
		}
		bySeq[r.res.Seq] = r.id
		byID[r.id] = r.res.Seq
	}
	for _, r := range got {
		if seq, ok := byID[r.id]; !ok || seq != r.res.Seq {
			t.Fatalf("%s: %+v; stored at %d (%v)", r.id, r.res, seq, ok)
		}
	}
	n := uint64(2*perNode*rounds + rounds)
	if uint64(len(bySeq)) != n {
		t.Fatalf("%d messages stored, want %d", len(bySeq), n)
	}
	for _, s := range nodes {
		e, first, last, err := s.Head(ctx, st)
		if err != nil || e != epoch || first != 1 || last != n {
			t.Fatalf("Head = %s, %d, %d, %v; want %s, 1, %d", e, first, last, err, epoch, n)
		}
		msgs, e, err := s.Range(ctx, st, 0, int(n)+1)
		if err != nil || e != epoch || uint64(len(msgs)) != n {
			t.Fatalf("Range = %d messages, %s, %v", len(msgs), e, err)
		}
		for i, m := range msgs {
			if m.Seq != uint64(i+1) || m.ID != bySeq[m.Seq] {
				t.Fatalf("Range[%d] = seq %d id %s; want seq %d id %s", i, m.Seq, m.ID, i+1, bySeq[uint64(i+1)])
			}
		}
	}
	var maxOwn uint64
	for id, seq := range byID {
		if !strings.HasPrefix(id, "shared-") {
			maxOwn = max(maxOwn, seq)
		}
	}
	for _, s := range nodes {
		if c, err := s.Cursor(ctx, st, "phone"); err != nil || c != maxOwn {
			t.Fatalf("Cursor = %d, %v; want %d", c, err, maxOwn)
		}
	}
}

// TestStreamNames: names with braces, percent signs and the key suffixes
// in them are distinct streams, and each stream's keys share one hash tag
// (one Redis Cluster slot).
func TestStreamNames(t *testing.T) {
	addr := sharedRedis(t)
	s := open(t, addr, newPrefix(t, addr), time.Now)
	ctx := t.Context()
	names := []string{"a}b", "a%7Db", "a%b", "}", "{", "{}", "}{", "a{b}c", "x}:meta", "x", "x:meta", "%", "%25", "\x00\xff"}
	for _, name := range names {
		res, err := s.Append(ctx, name, store.Message{ID: name})
		if err != nil || res[0].Seq != 1 {
			t.Fatalf("Append(%q) = %+v, %v; want seq 1", name, res, err)
		}
		keys := s.StreamKeys(name)
		tag := hashTag(keys[0])
		if tag == "" {
			t.Fatalf("%q: key %q has no hash tag", name, keys[0])
		}
		for _, k := range keys[1:] {
			if hashTag(k) != tag {
				t.Fatalf("%q: keys %q and %q have different hash tags", name, keys[0], k)
			}
		}
	}
	for _, name := range names {
		msgs, _, err := s.Range(ctx, name, 0, 10)
		if err != nil || len(msgs) != 1 || msgs[0].ID != name {
			t.Fatalf("Range(%q) = %v, %v; want its one message", name, msgs, err)
		}
	}
	seen := map[string]string{}
	for _, name := range names {
		for _, k := range s.StreamKeys(name) {
			if prev, ok := seen[k]; ok {
				t.Fatalf("streams %q and %q share key %q", prev, name, k)
			}
			seen[k] = name
		}
	}
}

// hashTag returns what Redis Cluster hashes of key: between the first {
// and the next }, if not empty.
func hashTag(key string) string {
	i := strings.IndexByte(key, '{')
	if i < 0 {
		return ""
	}
	j := strings.IndexByte(key[i+1:], '}')
	if j <= 0 {
		return ""
	}
	return key[i+1 : i+1+j]
}

// TestRangePages: a Range larger than one script's page, over expired
// messages and with a limit near MaxInt, returns everything in order.
func TestRangePages(t *testing.T) {
	addr := sharedRedis(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := open(t, addr, newPrefix(t, addr), func() time.Time { return now })
	ctx := t.Context()
	const st, n = "topic/app/big", 12000
	batch := make([]store.Message, n)
	for i := range batch {
		batch[i].ID = fmt.Sprint(i)
		if i%3 == 0 {
			batch[i].Expires = now // expired at once: never returned
		}
	}
	if _, err := s.Append(ctx, st, batch...); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{n, int(^uint(0) >> 1)} {
		msgs, _, err := s.Range(ctx, st, 0, limit)
		if err != nil || len(msgs) != n-n/3 {
			t.Fatalf("Range(0, %d) = %d messages, %v; want %d", limit, len(msgs), err, n-n/3)
		}
		for i, m := range msgs {
			if want := uint64(i/2*3 + i%2 + 2); m.Seq != want {
				t.Fatalf("Range(0, %d)[%d] = seq %d, want %d", limit, i, m.Seq, want)
			}
		}
	}
}
