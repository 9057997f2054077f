package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/redisstore"
)

// openFast opens a store on a test's own redis-server with short
// timeouts, so that outages show at once.
func openFast(t *testing.T, addr, prefix string) *redisstore.Store {
	t.Helper()
	s, err := redisstore.Open(t.Context(), redisstore.Options{
		Addr: addr, Prefix: prefix, Timeout: 500 * time.Millisecond, HealthInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("Open(%s): %v", addr, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// acked is what an Append acknowledged.
type acked struct {
	stream, id, epoch string
	seq               uint64
}

// wantUnavailable checks that err wraps store.ErrUnavailable and came
// within limit.
func wantUnavailable(t *testing.T, what string, err error, took, limit time.Duration) {
	t.Helper()
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("%s while Redis is down: err %v, want ErrUnavailable", what, err)
	}
	if took > limit {
		t.Fatalf("%s while Redis is down took %v, want at most %v", what, took, limit)
	}
}

// TestOutage kills the store's Redis (its own redis-server, appendonly yes,
// appendfsync always) while writers append: operations fail at once with
// ErrUnavailable and Health says so. Started again on the same AOF, Redis
// serves again without the store being reopened, every acknowledged
// append is there with its seq, and epochs are unchanged.
func TestOutage(t *testing.T) {
	srv := startRedis(t, t.TempDir(), "--appendonly", "yes", "--appendfsync", "always")
	s := openFast(t, srv.addr(), "herald:")
	if d := s.Durability(); !d.Durable || !d.Known {
		t.Fatalf("Durability = %+v (%s), want durable", d, d)
	}
	ctx := t.Context()
	streams := []string{"inbox/app/u1", "topic/app/news"}
	epochs := map[string]string{}
	for _, st := range streams {
		epoch, _, _, err := s.Head(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		epochs[st] = epoch
	}

	const writers = 4
	var (
		mu      sync.Mutex
		acks    []acked
		failed  []acked // appends that returned an error: stored or not
		total   atomic.Int64
		enough  = make(chan struct{})
		once    sync.Once
		wg      sync.WaitGroup
		errSeen = make(chan error, writers)
	)
	for w := range writers {
		wg.Go(func() {
			st := streams[w%len(streams)]
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				res, err := s.Append(ctx, st, store.Message{ID: id, Payload: []byte(id)})
				if err != nil {
					mu.Lock()
					failed = append(failed, acked{stream: st, id: id})
					mu.Unlock()
					errSeen <- err
					return
				}
				mu.Lock()
				acks = append(acks, acked{st, id, res[0].Epoch, res[0].Seq})
				mu.Unlock()
				if total.Add(1) == 200 {
					once.Do(func() { close(enough) })
				}
			}
		})
	}
	<-enough
	srv.kill()
	wg.Wait()
	close(errSeen)
	for err := range errSeen {
		if !errors.Is(err, store.ErrUnavailable) {
			t.Fatalf("a writer's Append failed with %v, want ErrUnavailable", err)
		}
	}

	// Down: every operation fails at once; Health says why.
	const limit = time.Second
	start := time.Now()
	_, err := s.Append(ctx, streams[0], store.Message{ID: "down"})
	wantUnavailable(t, "Append", err, time.Since(start), limit)
	start = time.Now()
	_, _, _, err = s.Head(ctx, streams[0])
	wantUnavailable(t, "Head", err, time.Since(start), limit)
	start = time.Now()
	_, _, err = s.Range(ctx, streams[0], 0, 10)
	wantUnavailable(t, "Range", err, time.Since(start), limit)
	start = time.Now()
	err = s.Ack(ctx, streams[0], "phone", 1)
	wantUnavailable(t, "Ack", err, time.Since(start), limit)
	start = time.Now()
	_, err = s.Expire(ctx)
	wantUnavailable(t, "Expire", err, time.Since(start), limit)
	if err := s.Health(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Health while Redis is down = %v, want ErrUnavailable", err)
	}

	// Back: the same store works again by itself (new connections, the
	// scripts loaded again after NOSCRIPT), with the same epochs.
	srv.start()
	waitFor(t, 10*time.Second, "Head after the restart", func() error {
		_, _, _, err := s.Head(ctx, streams[0])
		return err
	})
	waitFor(t, 10*time.Second, "Health after the restart", s.Health)
	if n := s.GenerationBumps(); n != 0 {
		t.Fatalf("a durable restart bumped the generation %d times", n)
	}
	// Every acknowledged append is there, at its seq, in its epoch.
	held := map[string]map[string]uint64{} // stream → id → seq
	for _, st := range streams {
		epoch, first, last, err := s.Head(ctx, st)
		if err != nil {
			t.Fatal(err)
		}
		if epoch != epochs[st] || first != 1 {
			t.Fatalf("Head(%s) after the restart = %s, %d; want epoch %s, first 1", st, epoch, first, epochs[st])
		}
		msgs, epoch, err := s.Range(ctx, st, 0, int(last)+10)
		if err != nil || epoch != epochs[st] || uint64(len(msgs)) != last {
			t.Fatalf("Range(%s) after the restart: %d messages of last %d, epoch %s, err %v", st, len(msgs), last, epoch, err)
		}
		held[st] = map[string]uint64{}
		for i, m := range msgs {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: seq %d at position %d", st, m.Seq, i)
			}
			held[st][m.ID] = m.Seq
		}
	}
	for _, a := range acks {
		if a.epoch != epochs[a.stream] {
			t.Fatalf("%s was acknowledged in epoch %s, the stream's is %s", a.id, a.epoch, epochs[a.stream])
		}
		if got, ok := held[a.stream][a.id]; !ok || got != a.seq {
			t.Fatalf("acknowledged %s (seq %d) after the restart: seq %d, held %v", a.id, a.seq, got, ok)
		}
	}
	// What failed may or may not be stored: a retry with the same id
	// tells, and keeps the stream contiguous.
	for _, f := range failed {
		res, err := s.Append(ctx, f.stream, store.Message{ID: f.id, Payload: []byte(f.id)})
		if err != nil {
			t.Fatal(err)
		}
		if seq, ok := held[f.stream][f.id]; ok != res[0].Duplicate || ok && seq != res[0].Seq {
			t.Fatalf("retry of %s: %+v; held before: %d, %v", f.id, res[0], seq, ok)
		}
	}
	t.Logf("%d appends acknowledged before the kill, %d failed", len(acks), len(failed))
}

// TestRestartNotDurable restarts a Redis that fsyncs its AOF every second:
// it may come back without its last acknowledged writes, so every stream
// takes a new epoch (once, whichever node sees the restart first), keeps
// what Redis kept and continues its seqs.
func TestRestartNotDurable(t *testing.T) {
	srv := startRedis(t, t.TempDir(), "--appendonly", "yes", "--appendfsync", "everysec")
	a, b := openFast(t, srv.addr(), "herald:"), openFast(t, srv.addr(), "herald:")
	if d := a.Durability(); d.Durable || !d.Known || !strings.Contains(d.String(), "everysec") {
		t.Fatalf("Durability = %+v (%s), want known, not durable", d, d)
	}
	ctx := t.Context()
	const st = "topic/app/news"
	res, err := a.Append(ctx, st, store.Message{ID: "m1"}, store.Message{ID: "m2"}, store.Message{ID: "m3"})
	if err != nil {
		t.Fatal(err)
	}
	old := res[0].Epoch

	srv.shutdown() // clean: the data is all there, but the store cannot know that
	srv.start()
	var epoch string
	waitFor(t, 10*time.Second, "Head after the restart", func() (err error) {
		epoch, _, _, err = b.Head(ctx, st)
		return err
	})
	if epoch == old {
		t.Fatalf("epoch %s unchanged after a restart that may have lost writes", epoch)
	}
	res, err = a.Append(ctx, st, store.Message{ID: "m2"}, store.Message{ID: "m4"})
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Epoch != epoch || !res[0].Duplicate || res[0].Seq != 2 || res[1].Duplicate || res[1].Seq != 4 {
		t.Fatalf("Append after the restart = %+v; want m2 a duplicate of 2, m4 at 4, epoch %s", res, epoch)
	}
	msgs, ep, err := b.Range(ctx, st, 0, 10)
	if err != nil || ep != epoch || len(msgs) != 4 {
		t.Fatalf("Range after the restart: %d messages, epoch %s, err %v", len(msgs), ep, err)
	}
	if bumps := a.GenerationBumps() + b.GenerationBumps(); bumps != 1 {
		t.Fatalf("the two stores bumped the generation %d times, want 1", bumps)
	}
}

// TestHang stops Redis (SIGSTOP): it accepts connections and answers
// nothing. Operations fail with ErrUnavailable within the store's timeout
// and Health says so; once Redis runs again, so does the store.
func TestHang(t *testing.T) {
	srv := startRedis(t, t.TempDir())
	s := openFast(t, srv.addr(), "herald:")
	ctx := t.Context()
	const st = "inbox/app/u1"
	res, err := s.Append(ctx, st, store.Message{ID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	srv.signal(syscall.SIGSTOP)
	start := time.Now()
	_, err = s.Append(ctx, st, store.Message{ID: "b"})
	wantUnavailable(t, "Append", err, time.Since(start), 2*time.Second)
	// A caller's deadline shorter than the store's timeout is kept, and
	// the error says both.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	start = time.Now()
	_, _, _, err = s.Head(short, st)
	cancel()
	wantUnavailable(t, "Head with a 100ms deadline", err, time.Since(start), time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Head with a deadline: err %v, want DeadlineExceeded too", err)
	}
	if err := s.Health(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Health while Redis hangs = %v", err)
	}
	srv.signal(syscall.SIGCONT)
	waitFor(t, 10*time.Second, "Append after SIGCONT", func() error {
		_, err := s.Append(ctx, st, store.Message{ID: "b"})
		return err
	})
	waitFor(t, 10*time.Second, "Health after SIGCONT", s.Health)
	epoch, first, last, err := s.Head(ctx, st)
	if err != nil || epoch != res[0].Epoch || first != 1 || last != 2 {
		t.Fatalf("Head after SIGCONT = %s, %d, %d, %v; want epoch %s, 1, 2", epoch, first, last, err, res[0].Epoch)
	}
}

// TestScriptFlush: after SCRIPT FLUSH the store loads its scripts again;
// the Redis process is the same, so epochs stay.
func TestScriptFlush(t *testing.T) {
	srv := startRedis(t, t.TempDir())
	s := openFast(t, srv.addr(), "herald:")
	ctx := t.Context()
	res, err := s.AppendMulti(ctx, []store.StreamAppend{{Stream: "a", Msgs: []store.Message{{ID: "1"}}}, {Stream: "b", Msgs: []store.Message{{ID: "1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	rdb := newClient(srv.addr())
	defer rdb.Close()
	flush := func() {
		t.Helper()
		if err := rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	again, err := s.AppendMulti(ctx, []store.StreamAppend{{Stream: "a", Msgs: []store.Message{{ID: "1"}, {ID: "2"}}}, {Stream: "b", Msgs: []store.Message{{ID: "2"}}}})
	if err != nil {
		t.Fatalf("AppendMulti after SCRIPT FLUSH: %v", err)
	}
	if again[0][0] != (store.Appended{Epoch: res[0][0].Epoch, Seq: 1, Duplicate: true}) || again[0][1].Seq != 2 || again[1][0].Epoch != res[1][0].Epoch || again[1][0].Seq != 2 {
		t.Fatalf("AppendMulti after SCRIPT FLUSH = %+v; first call %+v", again, res)
	}
	flush()
	if n, err := s.Expire(ctx); err != nil || n != 0 {
		t.Fatalf("Expire after SCRIPT FLUSH = %d, %v", n, err)
	}
	flush()
	if epoch, _, last, err := s.Head(ctx, "a"); err != nil || epoch != res[0][0].Epoch || last != 2 {
		t.Fatalf("Head after SCRIPT FLUSH = %s, %d, %v", epoch, last, err)
	}
	if s.GenerationBumps() != 0 {
		t.Fatal("SCRIPT FLUSH bumped the generation")
	}
}

// TestDurability: Durability says durable only for appendonly yes,
// appendfsync always and no-appendfsync-on-rewrite no; with CONFIG
// renamed away (as managed Redis services do), the store opens and says
// the durability is unknown.
func TestDurability(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		known   bool
		durable bool
		says    string
	}{
		{"always", []string{"--appendonly", "yes", "--appendfsync", "always"}, true, true, "fsynced"},
		{"no AOF", []string{"--appendonly", "no"}, true, false, "appendonly no"},
		{"everysec", []string{"--appendonly", "yes", "--appendfsync", "everysec"}, true, false, "everysec"},
		{"no fsync on rewrite", []string{"--appendonly", "yes", "--appendfsync", "always", "--no-appendfsync-on-rewrite", "yes"}, true, false, "no-appendfsync-on-rewrite"},
		{"CONFIG renamed", []string{"--rename-command", "CONFIG", ""}, false, false, "unknown"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := startRedis(t, t.TempDir(), tc.args...)
			s := openFast(t, srv.addr(), "herald:")
			d := s.Durability()
			if d.Known != tc.known || d.Durable != tc.durable || !strings.Contains(d.String(), tc.says) {
				t.Fatalf("Durability = %+v (%s); want known %v, durable %v, saying %q", d, d, tc.known, tc.durable, tc.says)
			}
			if _, err := s.Append(t.Context(), "a", store.Message{ID: "1"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOpenUnreachable: Open fails at once with ErrUnavailable when nothing
// listens; Health and Close of an open store behave.
func TestOpenUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	start := time.Now()
	_, err = redisstore.Open(t.Context(), redisstore.Options{Addr: addr, Timeout: 500 * time.Millisecond})
	if !errors.Is(err, store.ErrUnavailable) || time.Since(start) > 2*time.Second {
		t.Fatalf("Open(%s) with nothing listening = %v after %v; want ErrUnavailable at once", addr, err, time.Since(start))
	}
	if _, err := redisstore.Open(t.Context(), redisstore.Options{Addr: addr, Prefix: "a{b}:"}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Open with a brace in the prefix = %v, want ErrInvalid", err)
	}

	srv := startRedis(t, t.TempDir())
	s := openFast(t, srv.addr(), "herald:")
	if err := s.Health(); err != nil {
		t.Fatalf("Health = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Health(); !errors.Is(err, store.ErrClosed) {
		t.Fatalf("Health after Close = %v, want ErrClosed", err)
	}
}

// TestFailover promotes a replica (both durable) and moves the store to
// it, as clients following Sentinel would: the replica may lack what the
// old primary acknowledged last, so streams take new epochs there, keep
// what was replicated and continue their seqs.
func TestFailover(t *testing.T) {
	durable := []string{"--appendonly", "yes", "--appendfsync", "always"}
	primary := startRedis(t, t.TempDir(), append(durable, "--repl-diskless-sync-delay", "0")...)
	replica := startRedis(t, t.TempDir(), append(durable, "--replicaof", "127.0.0.1", strconv.Itoa(primary.port))...)
	ctx := t.Context()
	prdb, rrdb := newClient(primary.addr()), newClient(replica.addr())
	defer prdb.Close()
	defer rrdb.Close()
	waitFor(t, 10*time.Second, "replica in sync", func() error {
		info, err := rrdb.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return errors.New("master link not up")
		}
		return nil
	})

	a := openFast(t, primary.addr(), "herald:")
	const st = "topic/app/news"
	res, err := a.Append(ctx, st, store.Message{ID: "m1"}, store.Message{ID: "m2"}, store.Message{ID: "m3"})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := prdb.Wait(ctx, 1, 10*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v", n, err)
	}
	if err := rrdb.SlaveOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}

	b := openFast(t, replica.addr(), "herald:")
	epoch, first, last, err := b.Head(ctx, st)
	if err != nil || epoch == res[0].Epoch || first != 1 || last != 3 {
		t.Fatalf("Head on the promoted replica = %s, %d, %d, %v; want a new epoch (old %s), 1, 3", epoch, first, last, err, res[0].Epoch)
	}
	got, err := b.Append(ctx, st, store.Message{ID: "m3"}, store.Message{ID: "m4"})
	if err != nil || got[0] != (store.Appended{Epoch: epoch, Seq: 3, Duplicate: true}) || got[1] != (store.Appended{Epoch: epoch, Seq: 4}) {
		t.Fatalf("Append on the promoted replica = %+v, %v", got, err)
	}
	if n := b.GenerationBumps(); n != 1 {
		t.Fatalf("generation bumps on the promoted replica: %d, want 1", n)
	}
}
