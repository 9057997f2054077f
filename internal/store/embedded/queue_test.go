package embedded

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/herald-push/herald/internal/store"
)

// hold takes stream's writer token as a busy append leader would. It
// returns the stream's state, holding a reference: give the token back with
// <-s.sem and the reference with d.release.
func hold(d *DB, name string) *stream {
	s := d.acquire(name)
	s.sem <- struct{}{}
	return s
}

// waitQueued waits until exactly want appends are queued on s.
func waitQueued(s *stream, want int) {
	for {
		s.qmu.Lock()
		n := len(s.queue)
		s.qmu.Unlock()
		if n == want {
			return
		}
		runtime.Gosched()
	}
}

func TestAppendQueue(t *testing.T) {
	d, err := Open(filepath.Join(t.TempDir(), "data"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ctx := t.Context()
	const name = "topic/app/news"

	// An append whose context ends while it waits is taken out of the
	// queue: it is never stored.
	s := hold(d, name)
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		_, err := d.Append(cctx, name, store.Message{ID: "gone"})
		errc <- err
	}()
	waitQueued(s, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled Append: %v", err)
	}
	waitQueued(s, 0)

	// Appends queued behind a busy writer are committed together by the
	// first of them to get the token, in queue order.
	type result struct {
		res []store.Appended
		err error
	}
	results := make(chan result, 3)
	for i := range 3 {
		go func() {
			res, err := d.Append(ctx, name, store.Message{ID: string(rune('a' + i))}, store.Message{ID: "x"})
			results <- result{res, err}
		}()
		waitQueued(s, i+1)
	}
	<-s.sem
	d.release(s)
	seen := map[uint64]bool{}
	for range 3 {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		seen[r.res[0].Seq] = true
		if r.res[1].Seq != 2 || r.res[1].Duplicate != (r.res[0].Seq != 1) {
			t.Fatalf("x appended as %+v after %+v", r.res[1], r.res[0])
		}
	}
	if !seen[1] || !seen[3] || !seen[4] {
		t.Fatalf("seqs %v, want 1, 3, 4", seen)
	}
	if _, first, last, err := d.Head(ctx, name); err != nil || first != 1 || last != 4 {
		t.Fatalf("Head = %d, %d, %v; want 1, 4", first, last, err)
	}
	msgs, _, err := d.Range(ctx, name, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"a", "x", "b", "c"} {
		if msgs[i].ID != want {
			t.Fatalf("message %d is %q, want %q (queue order)", i+1, msgs[i].ID, want)
		}
	}
}
