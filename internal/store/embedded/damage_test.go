package embedded_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/embedded"
	"github.com/herald-push/herald/internal/store/embedded/damage"
)

// damageStreams are the streams the damage tests append to.
var damageStreams = []string{"u:a", "u:b", "t:news"}

// fillStore appends n messages to each damage stream, one synced Append
// each (so the log holds many records), and closes the store. It returns
// the epoch.
func fillStore(t *testing.T, dir string, n int) string {
	t.Helper()
	db := open(t, dir, embedded.Options{})
	ctx := context.Background()
	for i := range n {
		for _, s := range damageStreams {
			if _, err := db.Append(ctx, s, store.Message{ID: fmt.Sprintf("%s-%d", s, i+1), Payload: []byte(strings.Repeat("x", 200))}); err != nil {
				t.Fatalf("Append: %v", err)
			}
		}
	}
	epoch := db.Epoch()
	if err := db.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return epoch
}

// damageLog damages the newest log of dir.
func damageLog(t *testing.T, dir, kind string) {
	t.Helper()
	if err := damage.Log(dir, kind, 1); err != nil {
		t.Fatal(err)
	}
}

// checkStreams checks every damage stream of db: its messages run without
// a gap from 1 to its last, each with the id its seq was given.
func checkStreams(t *testing.T, db *embedded.DB) (lasts []uint64) {
	t.Helper()
	ctx := context.Background()
	for _, s := range damageStreams {
		_, first, last, err := db.Head(ctx, s)
		if err != nil {
			t.Fatalf("Head(%s): %v", s, err)
		}
		msgs, _, err := db.Range(ctx, s, 0, 1<<20)
		if err != nil {
			t.Fatalf("Range(%s): %v", s, err)
		}
		if first != 1 || uint64(len(msgs)) != last {
			t.Fatalf("%s: first %d, last %d, %d messages held", s, first, last, len(msgs))
		}
		for i, m := range msgs {
			if want := fmt.Sprintf("%s-%d", s, i+1); m.Seq != uint64(i+1) || m.ID != want {
				t.Fatalf("%s: message %d is seq %d id %q, want %d %q", s, i, m.Seq, m.ID, i+1, want)
			}
		}
		lasts = append(lasts, last)
	}
	return lasts
}

// TestDamagedLog damages the newest write-ahead log of a closed store three
// ways. Either Open notices that acknowledged messages are gone and starts
// a new epoch, or it refuses the data as damaged and Salvage keeps what is
// readable under a new epoch. Never does the store open in the old epoch
// with acknowledged messages missing.
func TestDamagedLog(t *testing.T) {
	const n = 400
	for _, how := range damage.Kinds {
		t.Run(how, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			epoch := fillStore(t, dir, n)
			damageLog(t, dir, how)

			db, err := embedded.Open(dir, embedded.Options{})
			salvaged := false
			if err != nil {
				if !errors.Is(err, embedded.ErrCorrupt) || !strings.Contains(err.Error(), "salvage") {
					t.Fatalf("Open of damaged data: %v; want ErrCorrupt naming salvage", err)
				}
				rep, err := embedded.Salvage(dir, embedded.Options{})
				if err != nil {
					t.Fatalf("Salvage: %v", err)
				}
				if rep.Healthy || rep.Stopped == nil || rep.PrevEpoch != epoch || rep.Epoch == epoch || rep.Epoch == "" {
					t.Fatalf("Salvage report %+v; want damage found and a new epoch after %s", rep, epoch)
				}
				t.Logf("salvage: %d logs, %d records, stopped at: %v", rep.Logs, rep.Records, rep.Stopped)
				salvaged = true
				db = open(t, dir, embedded.Options{})
				if rec := db.Recovery(); rec.Lost {
					t.Fatalf("open after salvage reports a loss: %+v", rec)
				}
			} else {
				rec := db.Recovery()
				if !rec.Lost || rec.PrevEpoch != epoch || rec.Epoch == epoch || rec.Recovered >= rec.Acked {
					t.Fatalf("Recovery %+v after damage (%s); want a loss and a new epoch after %s", rec, how, epoch)
				}
				t.Logf("recovery: %s", rec.Reason)
			}
			defer db.Close()
			if db.Epoch() == epoch {
				t.Fatalf("epoch kept after losing data (salvaged %v)", salvaged)
			}
			lasts := checkStreams(t, db)
			lost := false
			for _, l := range lasts {
				lost = lost || l < n
			}
			if !lost {
				t.Fatalf("damage %s lost nothing (lasts %v): the test does not damage what it means to", how, lasts)
			}
			// New messages continue after what was recovered, in the new epoch.
			ctx := context.Background()
			for i, s := range damageStreams {
				res, err := db.Append(ctx, s, store.Message{ID: fmt.Sprintf("%s-%d", s, lasts[i]+1)})
				if err != nil || res[0].Seq != lasts[i]+1 || res[0].Duplicate {
					t.Fatalf("Append to %s after recovery: %+v, %v; want seq %d", s, res, err, lasts[i]+1)
				}
			}
		})
	}
}

// TestReopenKeepsEpoch: a clean close and an undamaged log keep the epoch
// and report no loss, with and without interval syncing.
func TestReopenKeepsEpoch(t *testing.T) {
	for _, sync := range []embedded.SyncPolicy{embedded.SyncEvery, embedded.SyncInterval(5 * time.Millisecond)} {
		dir := filepath.Join(t.TempDir(), "data")
		db := open(t, dir, embedded.Options{Sync: sync})
		if rec := db.Recovery(); rec.Lost || rec.PrevEpoch != "" || rec.NoMark {
			t.Fatalf("new store: Recovery %+v", rec)
		}
		if _, err := db.Append(context.Background(), "s", store.Message{ID: "a"}); err != nil {
			t.Fatal(err)
		}
		epoch := db.Epoch()
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = open(t, dir, embedded.Options{Sync: sync})
		if rec := db.Recovery(); rec.Lost || db.Epoch() != epoch || rec.Recovered < rec.Acked {
			t.Fatalf("reopen: Recovery %+v, epoch %s, want %s", rec, db.Epoch(), epoch)
		}
		_ = db.Close()
	}
}

// TestNoMark: data written before the mark existed opens in its epoch, and
// losses are detected from then on.
func TestNoMark(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	epoch := fillStore(t, dir, 10)
	if err := os.Remove(filepath.Join(dir, "ACKED")); err != nil {
		t.Fatal(err)
	}
	db := open(t, dir, embedded.Options{})
	if rec := db.Recovery(); rec.Lost || !rec.NoMark || db.Epoch() != epoch {
		t.Fatalf("Recovery %+v, epoch %s (was %s)", rec, db.Epoch(), epoch)
	}
	for i := range 300 {
		if _, err := db.Append(context.Background(), "u:a", store.Message{ID: fmt.Sprintf("more-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	_ = db.Close()
	damageLog(t, dir, damage.Truncated)
	db = open(t, dir, embedded.Options{})
	defer db.Close()
	if rec := db.Recovery(); !rec.Lost || rec.NoMark {
		t.Fatalf("after damage: Recovery %+v", rec)
	}
}

// TestMarkTornWrite: a mark slot that is damaged leaves the other one.
func TestMarkTornWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	epoch := fillStore(t, dir, 10)
	path := filepath.Join(dir, "ACKED")
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 128 {
		t.Fatalf("mark file: %d bytes, %v", len(b), err)
	}
	// Damage the newer slot: the older one is used, which covers less, so
	// an undamaged log passes the check.
	b[0] ^= 0xff
	b[64] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	db := open(t, dir, embedded.Options{})
	defer db.Close()
	if rec := db.Recovery(); rec.Lost || !rec.NoMark || db.Epoch() != epoch {
		t.Fatalf("both slots damaged: Recovery %+v", rec)
	}
}

// TestWriteFailure: while the disk refuses writes, appends fail with
// ErrUnavailable and Health says so; once it takes them again the store
// reopens by itself, keeps everything it acknowledged, and takes appends.
func TestWriteFailure(t *testing.T) {
	fs, disk := damage.FullDisk()
	dir := filepath.Join(t.TempDir(), "data")
	db := open(t, dir, embedded.Options{FS: fs, RetryInterval: 5 * time.Millisecond})
	ctx := context.Background()
	acked := 0
	appendOne := func() error {
		_, err := db.Append(ctx, "u:a", store.Message{ID: fmt.Sprintf("m%d", acked+1), Payload: []byte("x")})
		if err == nil {
			acked++
		}
		return err
	}
	for range 50 {
		if err := appendOne(); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Health(); err != nil {
		t.Fatalf("Health before the fault: %v", err)
	}
	disk.On()
	if err := appendOne(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Append on a full disk: %v; want ErrUnavailable", err)
	}
	if err := db.Health(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("Health on a full disk: %v", err)
	}
	if err := appendOne(); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("second Append on a full disk: %v", err)
	}
	disk.Off()
	deadline := time.Now().Add(10 * time.Second)
	for db.Health() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover: %v", db.Health())
		}
		time.Sleep(5 * time.Millisecond) // polling the recovery loop's outcome
	}
	if db.Reopened() == 0 {
		t.Fatal("healthy again without a reopen")
	}
	// The message whose append failed may or may not be stored: a retry
	// with its id stores it at most once.
	res, err := db.Append(ctx, "u:a", store.Message{ID: fmt.Sprintf("m%d", acked+1), Payload: []byte("x")})
	if err != nil {
		t.Fatalf("retry after recovery: %v", err)
	}
	acked++
	if res[0].Seq != uint64(acked) {
		t.Fatalf("retry stored as seq %d, want %d", res[0].Seq, acked)
	}
	for range 10 {
		if err := appendOne(); err != nil {
			t.Fatal(err)
		}
	}
	if rec := db.Recovery(); rec.Lost {
		t.Fatalf("recovery after the fault reports a loss: %+v", rec)
	}
	epoch := db.Epoch()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db = open(t, dir, embedded.Options{})
	defer db.Close()
	msgs, _, err := db.Range(ctx, "u:a", 0, 1000)
	if err != nil || len(msgs) != acked || db.Epoch() != epoch {
		t.Fatalf("after restart: %d messages, %v, epoch %s; want %d in %s", len(msgs), err, db.Epoch(), acked, epoch)
	}
	for i, m := range msgs {
		if m.Seq != uint64(i+1) || m.ID != fmt.Sprintf("m%d", i+1) {
			t.Fatalf("message %d: seq %d id %s", i, m.Seq, m.ID)
		}
	}
}
