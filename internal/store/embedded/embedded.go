// Package embedded is the on-disk store.Store: one Pebble database
// (github.com/cockroachdb/pebble/v2, the LSM engine of CockroachDB) in a
// data directory, inside the server process.
//
// # Why Pebble
//
// Chosen by measurement against go.etcd.io/bbolt v1.5.0 on the project's
// machine (2 cores, virtual disk, one write+fdatasync ≈ 0.21 ms). The
// comparison benchmark, kept out of the module so that bbolt is not a
// dependency, wrote what one append writes (a 100-byte message and its id
// index entry) as one durable transaction per call, from W concurrent
// writers on W different streams (go test -bench . -benchtime 3s, b.RunParallel):
//
//	appends/s                       W=2    W=8    W=64
//	pebble v2.1.7 Commit(Sync)     3388  10709   68027
//	bbolt db.Batch, delay 10ms      179    704    4047  (default MaxBatchDelay)
//	bbolt db.Batch, delay 1ms      1076   2921   12253
//	bbolt db.Batch, delay 200µs    1067   3792    5296
//
// Pebble's commit pipeline groups the log writes and fsyncs of concurrent
// commits by itself, with no batching delay: a lone writer pays one fsync,
// many writers share one. bbolt's Batch must wait MaxBatchDelay to collect
// a group, then copies every touched B+tree page and fsyncs twice; it is 3×
// to 17× slower at every concurrency. Pebble also fits the data: appends at
// the end of sorted keys, Range as a prefix scan, cheap deletes for trims
// and expiry. Its cost is a larger dependency (pure Go; with cgo enabled it
// links a C zstd library that this store does not use).
//
// The whole Append path (id lookup, message, id index and counters in one
// batch), measured by BenchmarkAppend:
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 3s ./internal/store/embedded/
//
//	appends/s                       W=2    W=8    W=64
//	SyncEvery, a stream each       4175  16050   47209
//	SyncEvery, one stream          6325  16316   55656
//	SyncInterval(10ms), each      73243  74760   81427
//	SyncInterval(10ms), one       91956  82142   93582
//
// With one stream, waiting appends are committed as one batch (see Append),
// so a single busy topic is not limited to one fsync per message.
//
// AppendMulti writes to many streams in one batch and one fsync. Measured
// by BenchmarkAppendMulti (one message to each of 100 streams per call,
// SyncEvery): about 80,000-90,000 appends/s with 1 to 16 callers, against
// 55,000-60,000 for BenchmarkAppend SyncEvery writers=64/streams=each in
// the same session, at 18-21 rather than 23-25 µs of CPU per append.
//
// # Durability
//
// Appends are written to Pebble's write-ahead log in one batch per group of
// queued appends to a stream (see Append) and, under SyncEvery, fsynced
// before Append returns. Under SyncInterval(d) Append returns once the batch
// is in the log's buffer, and a background loop fsyncs at most every d: a
// crash of the machine (not just of the process) can lose up to d of
// accepted messages. Acks, trims and expiry removals are never fsynced on
// their own: they reach the disk with the next synced write, and losing them
// only causes redelivery or a later removal.
//
// Sequence counters are kept in each stream's meta record, written in the
// same batch as the messages, so they are recovered with them; a stream's
// counters are read on its first use after Open, and stay in memory while
// it is in use and afterwards in a bounded cache of the most recently used
// streams (Options.MetaCacheSize).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/herald-push/herald/internal/store"
)

// SyncPolicy says when appends are fsynced. SyncEvery is the default.
type SyncPolicy time.Duration

// SyncEvery fsyncs every append batch before Append returns.
const SyncEvery SyncPolicy = 0

// SyncInterval returns a policy that fsyncs at most every d, after Append
// has returned: a crash of the machine can lose up to d of accepted
// messages. d <= 0 means SyncEvery.
func SyncInterval(d time.Duration) SyncPolicy {
	return SyncPolicy(max(d, 0))
}

// Options configures Open. The zero value is valid.
type Options struct {
	// Now is the clock for acceptance times, expiry and age trims; nil
	// means time.Now.
	Now func() time.Time
	// Sync is the sync policy of appends.
	Sync SyncPolicy
	// Logger receives Pebble's messages; nil discards them.
	Logger *slog.Logger
	// CacheSize is the size of the block cache in bytes; 0 means
	// DefaultCacheSize.
	CacheSize int64
	// MetaCacheSize bounds how many idle streams keep their counters in
	// memory, so that appending again to a recently used stream does not
	// read them from disk: about 80 bytes plus the stream name's length
	// each (5 to 10 MB at the default). It is rounded up to a multiple of
	// 64. 0 means DefaultMetaCacheSize; negative means none.
	MetaCacheSize int
	// FS is the file system the store lives on; nil means the operating
	// system's. Tests inject faults through it.
	FS vfs.FS
	// RetryInterval is how often a failed store (see Health) tries to
	// reopen its data; 0 means DefaultRetryInterval.
	RetryInterval time.Duration
}

// DefaultRetryInterval is Options.RetryInterval's default.
const DefaultRetryInterval = time.Second

// DefaultCacheSize is the block cache size when Options.CacheSize is 0.
const DefaultCacheSize = 64 << 20

const (
	numShards  = 64
	numCursors = 256
	// expireChunk bounds the expired messages Expire reads before deleting.
	expireChunk = 1024
	// trimChunk bounds the messages one Trim batch deletes.
	trimChunk = 4096
)

// DB is an on-disk store.Store. Safe for concurrent use.
type DB struct {
	dir   string
	opts  Options
	log   *slog.Logger
	now   func() time.Time
	wo    *pebble.WriteOptions // for appends
	lazy  bool                 // SyncInterval: appends are not synced by their commit
	seed  maphash.Seed
	epoch atomic.Pointer[string]

	// closeMu is held shared by every operation and exclusively by Close
	// and by a reopen after a failure, so that Pebble is never used after
	// it is closed. pdb and mark change only under it held exclusively.
	closeMu sync.RWMutex
	closed  bool
	pdb     *pebble.DB // nil while a failed store has not reopened
	mark    *mark

	fault    atomic.Pointer[error] // why the store refuses operations; nil when healthy
	bgErr    atomic.Pointer[error] // the last failed background job, until one succeeds
	recovery Recovery              // what the last open found; under closeMu
	reopened atomic.Uint64         // successful reopens after a failure
	losses   atomic.Uint64         // opens that found acknowledged data missing
	stop     chan struct{}         // closed by Close: stops the sync and heal loops
	healing  sync.WaitGroup

	shards  [numShards]shard
	cursors [numCursors]cursorShard // cursor read cache (cursors.go)

	dirty    atomic.Bool // an unsynced append was written (SyncInterval)
	syncDone chan struct{}
}

type shard struct {
	mu      sync.Mutex
	streams map[string]*stream
	metas   metaCache // counters of recently used streams not in streams
}

// stream is the in-memory state of a stream in use: it exists while some
// operation holds a reference to it. An idle stream costs at most an entry
// in its shard's metaCache.
type stream struct {
	name string
	refs int // guarded by the shard's mu

	// sem is held (a token in it) by the one goroutine writing to the
	// stream: an append leader, Trim or Expire.
	sem    chan struct{}
	loaded bool // guarded by sem
	meta   meta // guarded by sem, valid if loaded
	// known is a copy of meta while loaded (nil otherwise), for Head to
	// read without the token.
	known atomic.Pointer[meta]

	qmu   sync.Mutex
	queue []*appendReq // appends waiting for a leader
}

// appendReq is one Append call waiting to be committed.
type appendReq struct {
	msgs []store.Message
	res  []store.Appended
	err  error
	done chan struct{}
}

var _ store.Store = (*DB)(nil)

// Open opens the store in dir, creating dir and a new store with a new
// epoch if it holds none.
//
// Open checks that Pebble recovered every write the store acknowledged
// (see mark.go). If it did not, Open starts a new epoch, logs the loss and
// reports it in Recovery: positions in the lost data cannot be resumed,
// and no sequence number is handed out twice in one epoch. Data that
// Pebble cannot open at all (a damaged log in the middle, a lost table)
// makes Open fail with an error wrapping ErrCorrupt that says to run
// Salvage.
func Open(dir string, opts Options) (*DB, error) {
	if opts.FS == nil {
		opts.FS = vfs.Default
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = DefaultRetryInterval
	}
	if err := opts.FS.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = discardLogger()
	}
	d := &DB{dir: dir, opts: opts, log: logger, now: opts.Now, seed: maphash.MakeSeed(), wo: pebble.Sync, stop: make(chan struct{})}
	if d.now == nil {
		d.now = time.Now
	}
	if opts.Sync > 0 {
		d.wo, d.lazy = pebble.NoSync, true
	}
	metas := opts.MetaCacheSize
	if metas == 0 {
		metas = DefaultMetaCacheSize
	}
	perShard := 0
	if metas > 0 {
		perShard = (metas + numShards - 1) / numShards
	}
	for i := range d.shards {
		d.shards[i].streams = make(map[string]*stream)
		d.shards[i].metas.init(perShard)
	}
	if err := d.openEngine(); err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", dir, err)
	}
	interval := markSyncInterval
	if d.lazy {
		interval = time.Duration(opts.Sync)
	}
	d.syncDone = make(chan struct{})
	go d.syncLoop(interval)
	return d, nil
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// pebbleOptions returns the options Pebble is opened with.
func (d *DB) pebbleOptions() *pebble.Options {
	popts := &pebble.Options{
		FS:                 d.opts.FS,
		Logger:             pebbleLogger{d.log},
		FormatMajorVersion: pebble.FormatNewest,
		CacheSize:          d.opts.CacheSize,
		EventListener: &pebble.EventListener{
			BackgroundError: func(err error) {
				err = fmt.Errorf("%w: background job: %w", store.ErrUnavailable, err)
				d.bgErr.Store(&err)
			},
			FlushEnd: func(info pebble.FlushInfo) {
				if info.Err == nil {
					d.bgErr.Store(nil)
				}
			},
			CompactionEnd: func(info pebble.CompactionInfo) {
				if info.Err == nil {
					d.bgErr.Store(nil)
				}
			},
		},
	}
	if popts.CacheSize <= 0 {
		popts.CacheSize = DefaultCacheSize
	}
	// Bloom filters on every level: Append looks up each new message's id,
	// which is usually absent, and a filter answers that without reading a
	// data block.
	for i := range popts.Levels {
		popts.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	return popts
}

// openEngine opens Pebble and the mark, reads or creates the epoch, and
// checks what Pebble recovered against the mark. The caller holds closeMu
// exclusively (or is Open).
func (d *DB) openEngine() (err error) {
	defer func() {
		if r := recover(); r != nil { // pebbleLogger.Fatalf
			err = fmt.Errorf("%w: %v", store.ErrUnavailable, r)
		}
	}()
	pdb, err := pebble.Open(d.dir, d.pebbleOptions())
	if err != nil {
		if pebble.IsCorruptionError(err) {
			return fmt.Errorf("%w: %w; the data cannot be opened as it is: see 'herald store salvage'", ErrCorrupt, err)
		}
		return err
	}
	mk, prev, found, err := openMark(d.opts.FS, d.dir, d.lazy)
	if err != nil {
		return errors.Join(err, pdb.Close())
	}
	d.pdb, d.mark = pdb, mk
	if err := d.checkRecovery(prev, found); err != nil {
		d.pdb, d.mark = nil, nil
		return errors.Join(err, pdb.Close(), mk.close())
	}
	return nil
}

// checkRecovery reads or creates the epoch and compares how far Pebble
// recovered with the mark prev (if found); on a loss it starts a new
// epoch. It then moves the mark to where Pebble stands.
func (d *DB) checkRecovery(prev markValue, found bool) error {
	format, err := d.get([]byte(formatKey))
	if err != nil {
		return err
	}
	epoch, err := d.get([]byte(epochKey))
	if err != nil {
		return err
	}
	if format != nil && string(format) != formatVersion {
		return fmt.Errorf("unknown data format %q, want %q", format, formatVersion)
	}
	if format != nil && len(epoch) == 0 {
		return fmt.Errorf("%w: no epoch", ErrCorrupt)
	}
	// The probe's sequence number is where Pebble's recovered log ends.
	probe := d.pdb.NewBatch()
	defer probe.Close()
	_ = probe.Set([]byte(openKey), encodeU64(uint64(d.now().UnixNano())), nil)
	if err := probe.Commit(pebble.Sync); err != nil {
		return err
	}
	recovered := uint64(probe.SeqNum())
	rec := Recovery{PrevEpoch: string(epoch), Acked: prev.seq, Recovered: recovered, NoMark: format != nil && !found}
	switch {
	case format == nil && found:
		rec.Lost, rec.Reason = true, "the store's data is gone but its mark remains: acknowledged messages are lost"
	case format == nil:
	case found && recovered < prev.seq:
		rec.Lost = true
		rec.Reason = fmt.Sprintf("the write-ahead log ends at %d, before %d, the end of the acknowledged writes: acknowledged messages are lost", recovered, prev.seq)
	case found && prev.flags&markLazy != 0 && prev.flags&markClean == 0 && prev.boot != d.markBoot():
		rec.Lost = true
		rec.Reason = "the store was syncing at intervals and the machine restarted without a clean close: messages accepted in the last interval may be lost"
	}
	after := recovered + 1
	if format == nil || rec.Lost {
		e := store.NewEpoch()
		b := d.pdb.NewBatch()
		defer b.Close()
		_ = b.Set([]byte(formatKey), []byte(formatVersion), nil)
		_ = b.Set([]byte(epochKey), []byte(e), nil)
		if err := b.Commit(pebble.Sync); err != nil {
			return err
		}
		after = uint64(b.SeqNum()) + uint64(b.Count())
		epoch = []byte(e)
	}
	rec.Epoch = string(epoch)
	var flags uint8
	if d.lazy {
		flags = markLazy
	}
	if err := d.mark.set(after, flags); err != nil {
		return err
	}
	e := string(epoch)
	d.epoch.Store(&e)
	d.recovery = rec
	if rec.Lost {
		d.losses.Add(1)
		d.log.Error("store lost acknowledged data: starting a new epoch; clients are told their positions cannot be recovered",
			"dir", d.dir, "reason", rec.Reason, "previous_epoch", rec.PrevEpoch, "epoch", rec.Epoch)
	}
	return nil
}

func (d *DB) markBoot() [16]byte { return d.mark.boot }

// Recovery is what Open (or the last reopen after a failure) found about
// the data it opened.
type Recovery struct {
	// Lost: Pebble recovered less than the store had acknowledged (or the
	// store cannot rule that out); a new epoch was started.
	Lost bool
	// Reason says what was found, when Lost.
	Reason string
	// PrevEpoch is the epoch the data had ("" for a new store); Epoch is
	// the epoch now.
	PrevEpoch, Epoch string
	// Acked is the Pebble sequence number past the newest acknowledged
	// write, as the mark recorded it; Recovered is where Pebble's log
	// ended at open.
	Acked, Recovered uint64
	// NoMark: the data had no mark (a store written by an older version);
	// losses are detected from this open on.
	NoMark bool
}

// Losses returns how many opens (at Open, or reopening after a failure)
// found acknowledged data missing and started a new epoch.
func (d *DB) Losses() uint64 { return d.losses.Load() }

// Recovery returns what the last open found.
func (d *DB) Recovery() Recovery {
	d.closeMu.RLock()
	defer d.closeMu.RUnlock()
	return d.recovery
}

// syncLoop syncs the mark (and under SyncInterval first the log) at most
// every interval while there is something to sync.
func (d *DB) syncLoop(interval time.Duration) {
	defer close(d.syncDone)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-tick.C:
			d.syncLog(d.dirty.Swap(false))
		}
	}
}

// syncLog syncs the log, if log is set, and then the mark; a failure fails
// the store.
func (d *DB) syncLog(log bool) {
	if d.enter(context.Background()) != nil {
		return
	}
	defer d.leave()
	if log {
		if err := d.guard(func() error { return d.pdb.LogData(nil, pebble.Sync) }); err != nil {
			return
		}
	}
	if err := d.mark.sync(); err != nil {
		_ = d.fail(err)
	}
}

// Dir returns the data directory.
func (d *DB) Dir() string { return d.dir }

// Epoch returns the epoch of every stream of the store: it changes only
// when an open finds acknowledged data missing (see Recovery).
func (d *DB) Epoch() string { return *d.epoch.Load() }

// Close implements store.Store. It syncs what is not yet synced and marks
// the store as closed cleanly.
func (d *DB) Close() error {
	d.closeMu.Lock()
	if d.closed {
		d.closeMu.Unlock()
		return nil
	}
	d.closed = true
	close(d.stop)
	d.closeMu.Unlock()
	<-d.syncDone
	d.healing.Wait()
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.pdb == nil {
		return nil // failed, and not reopened
	}
	var err error
	if d.fault.Load() == nil {
		err = d.closeClean()
	}
	if cerr := d.closeEngine(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	if err != nil {
		return fmt.Errorf("embedded: close %s: %w", d.dir, err)
	}
	return nil
}

// closeClean syncs the log and records in the mark that the store was
// closed cleanly at the log's end.
func (d *DB) closeClean() error {
	b := d.pdb.NewBatch()
	defer b.Close()
	_ = b.LogData(nil, nil)
	if err := d.guard(func() error { return b.Commit(pebble.Sync) }); err != nil {
		return err
	}
	flags := uint8(markClean)
	if d.lazy {
		flags |= markLazy
	}
	return d.mark.set(uint64(b.SeqNum()), flags)
}

// closeEngine closes Pebble and the mark, whatever state they are in.
func (d *DB) closeEngine() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("close after failure: %v", r)
		}
		d.pdb, d.mark = nil, nil
	}()
	return errors.Join(d.pdb.Close(), d.mark.close())
}

// enter starts an operation: it checks ctx, holds closeMu shared and fails
// with ErrClosed after Close, or with the failure while the store has
// failed. On success the caller must call d.leave.
func (d *DB) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d.closeMu.RLock()
	if d.closed {
		d.closeMu.RUnlock()
		return store.ErrClosed
	}
	if f := d.fault.Load(); f != nil {
		d.closeMu.RUnlock()
		return *f
	}
	return nil
}

func (d *DB) leave() { d.closeMu.RUnlock() }

// get returns a copy of key's value, nil if there is none.
func (d *DB) get(key []byte) ([]byte, error) {
	v, closer, err := d.pdb.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := slices.Clone(v)
	if out == nil {
		out = []byte{}
	}
	return out, closer.Close()
}

// acquire returns the state of stream, holding a reference to it.
func (d *DB) acquire(name string) *stream {
	sh := &d.shards[maphash.String(d.seed, name)%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.streams[name]
	if s == nil {
		s = &stream{name: name, sem: make(chan struct{}, 1)}
		if m, ok := sh.metas.get(name); ok {
			s.setMeta(m)
		}
		sh.streams[name] = s
	}
	s.refs++
	return s
}

// release drops a reference taken by acquire. The last one keeps the
// stream's counters in the shard's metaCache if they are known.
func (d *DB) release(s *stream) {
	sh := &d.shards[maphash.String(d.seed, s.name)%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s.refs--; s.refs == 0 {
		delete(sh.streams, s.name)
		if s.loaded {
			sh.metas.put(s.name, s.meta)
		} else {
			sh.metas.remove(s.name) // a failed commit: reread them
		}
	}
}

// lock takes s's writer token, waiting at most until ctx is done.
func (s *stream) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stream) unlock() { <-s.sem }

// setMeta records s's counters as known. The caller holds s's token (or
// the only reference).
func (s *stream) setMeta(m meta) {
	s.meta, s.loaded = m, true
	s.known.Store(&m)
}

// forgetMeta marks s's counters unknown (a failed commit): they are reread.
func (s *stream) forgetMeta() {
	s.loaded = false
	s.known.Store(nil)
}

// load reads s's counters if they are not in memory (in s, or in the
// metaCache when s was created). The caller holds s's token.
func (d *DB) load(s *stream) error {
	if s.loaded {
		return nil
	}
	v, err := d.get(metaKey(s.name))
	if err != nil {
		return err
	}
	var m meta
	if v != nil {
		if m, err = decodeMeta(v); err != nil {
			return err
		}
	}
	s.setMeta(m)
	return nil
}

// Append implements store.Store.
//
// Appends to one stream queue behind the goroutine committing to it; when
// it is done, the first waiter takes every queued append and commits them
// in one batch. A busy stream thus pays one fsync per group of appends, not
// per append, and different streams share fsyncs in Pebble's commit
// pipeline.
func (d *DB) Append(ctx context.Context, name string, msgs ...store.Message) ([]store.Appended, error) {
	if err := store.CheckAppend(name, msgs); err != nil {
		return nil, err
	}
	if err := d.enter(ctx); err != nil {
		return nil, err
	}
	defer d.leave()
	if len(msgs) == 0 {
		return nil, nil
	}
	s := d.acquire(name)
	defer d.release(s)
	req := &appendReq{msgs: msgs, done: make(chan struct{})}
	s.qmu.Lock()
	s.queue = append(s.queue, req)
	s.qmu.Unlock()
	for {
		select {
		case <-req.done:
			return req.res, req.err
		case s.sem <- struct{}{}:
			select {
			case <-req.done: // committed by the leader before us
			default:
				// Holding the token, req is still queued: lead.
				s.qmu.Lock()
				batch := s.queue
				s.queue = nil
				s.qmu.Unlock()
				d.commitAppends(s, batch)
			}
			s.unlock()
			return req.res, req.err
		case <-ctx.Done():
			s.qmu.Lock()
			if i := slices.Index(s.queue, req); i >= 0 {
				s.queue = slices.Delete(s.queue, i, i+1) // never stored
			}
			s.qmu.Unlock()
			return nil, fmt.Errorf("embedded: append to %q: %w", name, ctx.Err())
		}
	}
}

// commitAppends stores the appends of batch in one write and completes
// them. The caller holds s's token.
func (d *DB) commitAppends(s *stream, batch []*appendReq) {
	defer func() {
		for _, r := range batch {
			close(r.done)
		}
	}()
	fail := func(err error) {
		err = fmt.Errorf("embedded: append to %q: %w", s.name, err)
		for _, r := range batch {
			r.res, r.err = nil, err
		}
	}
	if err := d.load(s); err != nil {
		fail(err)
		return
	}
	now := d.now()
	m := s.meta
	b := d.pdb.NewBatch()
	defer b.Close()
	var fresh map[string]uint64 // ids stored by this batch
	for _, r := range batch {
		var err error
		if r.res, err = d.stage(b, s.name, &m, &fresh, r.msgs, now); err != nil {
			fail(err)
			return
		}
	}
	if m.last == s.meta.last {
		return // only duplicates
	}
	_ = b.Set(metaKey(s.name), m.encode(), nil)
	if err := d.commitAppend(b); err != nil {
		s.forgetMeta() // reread the counters next time
		fail(err)
		return
	}
	s.setMeta(m)
	if d.lazy {
		d.dirty.Store(true)
	}
}

// commitAppend commits a batch of appends under the sync policy and makes
// the mark cover it before the appends are acknowledged.
func (d *DB) commitAppend(b *pebble.Batch) error {
	if err := d.guard(func() error { return b.Commit(d.wo) }); err != nil {
		return err
	}
	end := uint64(b.SeqNum()) + uint64(b.Count())
	if b.SeqNum() == 0 {
		// A large batch: Pebble drops its contents, header included, at
		// commit. An empty record committed after it ends past it.
		lb := d.pdb.NewBatch()
		defer lb.Close()
		_ = lb.LogData(nil, nil)
		if err := d.guard(func() error { return lb.Commit(d.wo) }); err != nil {
			return err
		}
		end = uint64(lb.SeqNum())
	}
	if err := d.mark.advance(end); err != nil {
		return d.fail(err)
	}
	return nil
}

// stage adds to b the appends of msgs to stream, whose counters are *m
// (updated), and returns their results. *fresh maps the ids b already
// stores in stream to their sequences; stage creates it when needed and
// adds to it. It does not write the meta record.
func (d *DB) stage(b *pebble.Batch, stream string, m *meta, fresh *map[string]uint64, msgs []store.Message, now time.Time) ([]store.Appended, error) {
	nowNano := unixNano(now)
	epoch := d.Epoch()
	res := make([]store.Appended, len(msgs))
	for i := range msgs {
		in := &msgs[i]
		if in.ID != "" {
			if seq, ok := (*fresh)[in.ID]; ok {
				res[i] = store.Appended{Epoch: epoch, Seq: seq, Duplicate: true}
				continue
			}
			seq, ok, err := d.lookupID(stream, in.ID, m.mark, nowNano)
			if err != nil {
				return nil, err
			}
			if ok {
				res[i] = store.Appended{Epoch: epoch, Seq: seq, Duplicate: true}
				continue
			}
		}
		m.last++
		t := in.Time
		if t.IsZero() {
			t = now
		}
		exp := unixNano(in.Expires)
		_ = b.Set(msgKey(stream, m.last), encodeMessage(unixNano(t), exp, in.ID, in.Payload), nil)
		if in.ID != "" {
			_ = b.Set(idKey(stream, in.ID), idEntry{seq: m.last, expires: exp}.encode(), nil)
			if *fresh == nil {
				*fresh = make(map[string]uint64)
			}
			(*fresh)[in.ID] = m.last
		}
		if exp != 0 {
			_ = b.Set(expiryKey(exp, stream, m.last), []byte(in.ID), nil)
		}
		res[i] = store.Appended{Epoch: epoch, Seq: m.last}
	}
	return res, nil
}

// lookupID returns the sequence of the held, unexpired message of stream
// with id.
func (d *DB) lookupID(stream, id string, mark uint64, now int64) (uint64, bool, error) {
	v, err := d.get(idKey(stream, id))
	if err != nil || v == nil {
		return 0, false, err
	}
	e, err := decodeIDEntry(v)
	if err != nil {
		return 0, false, err
	}
	if e.seq <= mark || expired(e.expires, now) {
		return 0, false, nil
	}
	return e.seq, true, nil
}

// Range implements store.Store.
func (d *DB) Range(ctx context.Context, name string, after uint64, limit int) ([]store.Message, string, error) {
	if err := store.CheckName("stream", name); err != nil {
		return nil, "", err
	}
	if err := store.CheckLimit(limit); err != nil {
		return nil, "", err
	}
	if err := d.enter(ctx); err != nil {
		return nil, "", err
	}
	defer d.leave()
	out, m, err := d.scan(ctx, name, after, limit)
	if err != nil {
		return nil, "", fmt.Errorf("embedded: range %q: %w", name, err)
	}
	if after < m.mark {
		return out, d.Epoch(), fmt.Errorf("%w: stream %q after %d, first is %d", store.ErrTrimmed, name, after, m.mark+1)
	}
	return out, d.Epoch(), nil
}

// scan reads stream's meta and up to limit unexpired messages after after,
// from one consistent view.
func (d *DB) scan(ctx context.Context, name string, after uint64, limit int) (out []store.Message, m meta, err error) {
	mk := metaKey(name)
	it, err := d.pdb.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: mk, UpperBound: endKey(name)})
	if err != nil {
		return nil, meta{}, err
	}
	defer func() {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
	}()
	if it.SeekGE(mk) && string(it.Key()) == string(mk) {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, meta{}, err
		}
		if m, err = decodeMeta(v); err != nil {
			return nil, meta{}, err
		}
	}
	if after == math.MaxUint64 || after >= m.last {
		return nil, m, it.Error()
	}
	now := unixNano(d.now())
	for ok := it.SeekGE(msgKey(name, after+1)); ok && len(out) < limit; ok = it.Next() {
		seq, err := msgKeySeq(it.Key())
		if err != nil {
			return nil, meta{}, err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, meta{}, err
		}
		msg, exp, err := decodeMessage(seq, v)
		if err != nil {
			return nil, meta{}, err
		}
		if !expired(exp, now) {
			out = append(out, msg)
		}
	}
	return out, m, it.Error()
}

// Head implements store.Store.
func (d *DB) Head(ctx context.Context, name string) (epoch string, first, last uint64, err error) {
	if err := store.CheckName("stream", name); err != nil {
		return "", 0, 0, err
	}
	if err := d.enter(ctx); err != nil {
		return "", 0, 0, err
	}
	defer d.leave()
	m, ok := d.knownMeta(name)
	if !ok {
		v, err := d.get(metaKey(name))
		if err == nil && v != nil {
			m, err = decodeMeta(v)
		}
		if err != nil {
			return "", 0, 0, fmt.Errorf("embedded: head %q: %w", name, err)
		}
	}
	return d.Epoch(), m.mark + 1, m.last, nil
}

// knownMeta returns name's counters if they are in memory: in the state of
// a stream in use, or in the metaCache.
func (d *DB) knownMeta(name string) (meta, bool) {
	sh := &d.shards[maphash.String(d.seed, name)%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s := sh.streams[name]; s != nil {
		if p := s.known.Load(); p != nil {
			return *p, true
		}
		return meta{}, false
	}
	return sh.metas.get(name)
}

// Lookup implements store.Store.
func (d *DB) Lookup(ctx context.Context, name, id string) (uint64, bool, error) {
	_, first, _, err := d.Head(ctx, name)
	if err != nil || id == "" {
		return 0, false, err
	}
	if err := d.enter(ctx); err != nil {
		return 0, false, err
	}
	defer d.leave()
	seq, ok, err := d.lookupID(name, id, first-1, unixNano(d.now()))
	if err != nil {
		return 0, false, fmt.Errorf("embedded: lookup %q: %w", name, err)
	}
	return seq, ok, nil
}

// Ack implements store.Store. The cursor is written without an fsync of
// its own.
func (d *DB) Ack(ctx context.Context, name, device string, seq uint64) error {
	if err := store.CheckName("stream", name); err != nil {
		return err
	}
	if err := store.CheckName("device", device); err != nil {
		return err
	}
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.leave()
	key := cursorKey(name, device)
	sh := d.cursorShard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur, err := d.loadCursor(sh, key)
	if err == nil && seq > cur {
		err = d.storeCursor(sh, key, seq)
	}
	if err != nil {
		return fmt.Errorf("embedded: ack %q %q: %w", name, device, err)
	}
	return nil
}

func (d *DB) cursor(key []byte) (uint64, error) {
	v, err := d.get(key)
	if err != nil || v == nil {
		return 0, err
	}
	return decodeU64(v)
}

// Cursor implements store.Store.
func (d *DB) Cursor(ctx context.Context, name, device string) (uint64, error) {
	if err := store.CheckName("stream", name); err != nil {
		return 0, err
	}
	if err := store.CheckName("device", device); err != nil {
		return 0, err
	}
	if err := d.enter(ctx); err != nil {
		return 0, err
	}
	defer d.leave()
	key := cursorKey(name, device)
	sh := d.cursorShard(key)
	sh.mu.Lock()
	c, err := d.loadCursor(sh, key)
	sh.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("embedded: cursor %q %q: %w", name, device, err)
	}
	return c, nil
}

// deleteMessage adds to b the deletion of message seq of stream (id and
// expires as stored) with its expiry entry, and with its id entry if that
// still points to it.
func (d *DB) deleteMessage(b *pebble.Batch, stream string, seq uint64, id string, expires int64) error {
	_ = b.Delete(msgKey(stream, seq), nil)
	if expires != 0 {
		_ = b.Delete(expiryKey(expires, stream, seq), nil)
	}
	if id == "" {
		return nil
	}
	ik := idKey(stream, id)
	v, err := d.get(ik)
	if err != nil || v == nil {
		return err
	}
	e, err := decodeIDEntry(v)
	if err != nil {
		return err
	}
	if e.seq == seq {
		_ = b.Delete(ik, nil)
	}
	return nil
}

// Trim implements store.Store. It deletes in batches of at most trimChunk
// messages, each moving the first sequence, so a long trim does not hold up
// appends to the stream for long.
func (d *DB) Trim(ctx context.Context, name string, keep int, maxAge time.Duration) error {
	if err := store.CheckName("stream", name); err != nil {
		return err
	}
	if keep < 0 || maxAge < 0 {
		return fmt.Errorf("%w: trim keep %d, max age %v", store.ErrInvalid, keep, maxAge)
	}
	if err := d.enter(ctx); err != nil {
		return err
	}
	defer d.leave()
	if keep == 0 && maxAge == 0 {
		return nil
	}
	s := d.acquire(name)
	defer d.release(s)
	now := d.now()
	for {
		more, err := d.trimChunk(ctx, s, keep, maxAge, now)
		if err != nil {
			return fmt.Errorf("embedded: trim %q: %w", name, err)
		}
		if !more {
			return nil
		}
	}
}

// trimChunk deletes up to trimChunk messages that Trim drops and reports
// whether there may be more.
func (d *DB) trimChunk(ctx context.Context, s *stream, keep int, maxAge time.Duration, now time.Time) (more bool, err error) {
	if err := s.lock(ctx); err != nil {
		return false, err
	}
	defer s.unlock()
	if err := d.load(s); err != nil {
		return false, err
	}
	m := s.meta
	cut := m.mark // newest sequence to drop
	if keep > 0 && m.last > uint64(keep) {
		cut = max(cut, m.last-uint64(keep))
	}
	oldest := int64(math.MinInt64)
	if maxAge > 0 {
		oldest = unixNano(now.Add(-maxAge))
	}
	it, err := d.pdb.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: msgKey(s.name, m.mark+1), UpperBound: endKey(s.name)})
	if err != nil {
		return false, err
	}
	defer func() {
		if cerr := it.Close(); err == nil {
			err = cerr
		}
	}()
	b := d.pdb.NewBatch()
	defer b.Close()
	n := 0
	var deleted uint64 // newest sequence this chunk deletes
	for ok := it.First(); ok; ok = it.Next() {
		if n == trimChunk {
			more = true
			break
		}
		seq, err := msgKeySeq(it.Key())
		if err != nil {
			return false, err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return false, err
		}
		msg, exp, err := decodeMessage(seq, v)
		if err != nil {
			return false, err
		}
		if seq > cut && unixNano(msg.Time) >= oldest {
			break
		}
		if err := d.deleteMessage(b, s.name, seq, msg.ID, exp); err != nil {
			return false, err
		}
		cut = max(cut, seq)
		deleted = seq
		n++
	}
	if err := it.Error(); err != nil {
		return false, err
	}
	if more {
		m.mark = deleted // the rest up to cut is for the next chunk
	} else {
		m.mark = cut
	}
	if m.mark == s.meta.mark && n == 0 {
		return false, nil
	}
	_ = b.Set(metaKey(s.name), m.encode(), nil)
	if err := d.guard(func() error { return b.Commit(pebble.NoSync) }); err != nil {
		s.forgetMeta()
		return false, err
	}
	s.setMeta(m)
	return more, nil
}

// Expire implements store.Store.
func (d *DB) Expire(ctx context.Context) (int, error) {
	if err := d.enter(ctx); err != nil {
		return 0, err
	}
	defer d.leave()
	now := unixNano(d.now())
	removed := 0
	for {
		n, more, err := d.expireChunk(ctx, now)
		removed += n
		if err != nil {
			return removed, fmt.Errorf("embedded: expire: %w", err)
		}
		if !more {
			return removed, nil
		}
	}
}

// expiredEntry is one message found in the expiry index.
type expiredEntry struct {
	key []byte
	seq uint64
	id  string
}

// expireChunk removes up to expireChunk messages expired at now.
func (d *DB) expireChunk(ctx context.Context, now int64) (removed int, more bool, err error) {
	byStream := map[string][]expiredEntry{}
	err = func() (err error) {
		it, err := d.pdb.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: expiryBound(1), UpperBound: expiryBound(now + 1)})
		if err != nil {
			return err
		}
		defer func() {
			if cerr := it.Close(); err == nil {
				err = cerr
			}
		}()
		n := 0
		for ok := it.First(); ok; ok = it.Next() {
			if n == expireChunk {
				more = true
				break
			}
			name, seq, err := parseExpiryKey(it.Key())
			if err != nil {
				return err
			}
			v, err := it.ValueAndErr()
			if err != nil {
				return err
			}
			byStream[name] = append(byStream[name], expiredEntry{key: slices.Clone(it.Key()), seq: seq, id: string(v)})
			n++
		}
		return it.Error()
	}()
	if err != nil {
		return 0, false, err
	}
	for name, entries := range byStream {
		n, err := d.expireStream(ctx, name, entries)
		removed += n
		if err != nil {
			return removed, false, err
		}
	}
	return removed, more, nil
}

// expireStream removes the expired messages of one stream found by
// expireChunk, skipping those a concurrent Trim removed meanwhile.
func (d *DB) expireStream(ctx context.Context, name string, entries []expiredEntry) (int, error) {
	s := d.acquire(name)
	defer d.release(s)
	if err := s.lock(ctx); err != nil {
		return 0, err
	}
	defer s.unlock()
	b := d.pdb.NewBatch()
	defer b.Close()
	n := 0
	for _, e := range entries {
		v, err := d.get(e.key)
		if err != nil {
			return 0, err
		}
		if v == nil {
			continue // trimmed meanwhile
		}
		_ = b.Delete(e.key, nil)
		if err := d.deleteMessage(b, name, e.seq, e.id, 0); err != nil {
			return 0, err
		}
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if err := d.guard(func() error { return b.Commit(pebble.NoSync) }); err != nil {
		return 0, err
	}
	return n, nil
}

// pebbleLogger sends Pebble's log to slog.
type pebbleLogger struct{ l *slog.Logger }

// Infof logs at debug level: Pebble's informational messages (WAL
// recovery, compactions) are routine for an operator.
func (p pebbleLogger) Infof(format string, args ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug(fmt.Sprintf(format, args...), "component", "pebble")
	}
}

func (p pebbleLogger) Errorf(format string, args ...any) {
	p.l.Error(fmt.Sprintf(format, args...), "component", "pebble")
}

// Fatalf logs and panics: Pebble calls it on unrecoverable corruption and
// expects it not to return.
func (p pebbleLogger) Fatalf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	p.l.Error(msg, "component", "pebble")
	panic("embedded: pebble: " + msg)
}
