package embedded

import (
	"fmt"
	"time"

	"github.com/herald-push/herald/internal/store"
)

// Failures.
//
// Pebble treats a failed write to its log (a full disk, an I/O error) as
// fatal: its commit pipeline cannot go on, and it calls Logger.Fatalf,
// which panics here (see pebbleLogger). The store turns that into a
// failure of its own: every write goes through guard, the first failure
// makes every operation answer an error wrapping store.ErrUnavailable, and
// a goroutine reopens the data every Options.RetryInterval until Pebble
// opens and takes a synced write again. Reopening replays the log, so
// nothing acknowledged before the failure is lost (and Open's mark check
// would announce it if it were); what the failing write was doing may or
// may not be stored, which is what its caller was told.

// guard runs a Pebble write, turning an error or Pebble's fatal panic into
// a failure of the store.
func (d *DB) guard(write func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = d.fail(fmt.Errorf("%v", r))
		}
	}()
	if err := write(); err != nil {
		return d.fail(err)
	}
	return nil
}

// fail records cause as the store's failure, if it is the first, and
// starts healing. It returns the failure.
func (d *DB) fail(cause error) error {
	err := fmt.Errorf("%w: %w", store.ErrUnavailable, cause)
	if d.fault.CompareAndSwap(nil, &err) {
		d.log.Error("store failed: writes are refused until it recovers", "dir", d.dir, "err", cause)
		d.healing.Add(1)
		go d.heal()
	}
	return *d.fault.Load()
}

// heal reopens the store every RetryInterval until it works again or the
// store is closed.
func (d *DB) heal() {
	defer d.healing.Done()
	t := time.NewTicker(d.opts.RetryInterval)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		if d.reopen() {
			return
		}
	}
}

// reopen closes Pebble and opens it again; it reports whether the store
// is healthy again.
func (d *DB) reopen() bool {
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed {
		return true
	}
	if d.pdb != nil {
		_ = d.closeEngine() // it failed: its errors say nothing new
	}
	if err := d.openEngine(); err != nil {
		d.log.Warn("store still failing", "dir", d.dir, "err", err)
		return false
	}
	// Counters and cursors in memory may be older or newer than the
	// reopened data (a write that failed may have reached the log).
	for i := range d.shards {
		sh := &d.shards[i]
		sh.mu.Lock()
		sh.metas.init(sh.metas.limit)
		sh.mu.Unlock()
	}
	for i := range d.cursors {
		d.cursors[i].mu.Lock()
		d.cursors[i].m = nil
		d.cursors[i].mu.Unlock()
	}
	d.fault.Store(nil)
	d.bgErr.Store(nil)
	d.reopened.Add(1)
	d.log.Warn("store recovered: writes are taken again", "dir", d.dir, "epoch", d.Epoch())
	return true
}

// Health implements store.Store.
func (d *DB) Health() error {
	d.closeMu.RLock()
	closed := d.closed
	d.closeMu.RUnlock()
	if closed {
		return store.ErrClosed
	}
	if f := d.fault.Load(); f != nil {
		return *f
	}
	if e := d.bgErr.Load(); e != nil {
		return *e
	}
	return nil
}

// Reopened returns how many times the store recovered from a failure.
func (d *DB) Reopened() uint64 { return d.reopened.Load() }
