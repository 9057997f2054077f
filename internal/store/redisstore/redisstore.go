// Package redisstore is a store.Store on Redis that every node of a cluster
// reads and writes: streams, their epochs and sequence numbers, id indexes
// and cursors live in Redis, and every operation that changes a stream is
// one Lua script, which Redis runs alone.
//
// # Why Redis, and not NATS JetStream
//
// Chosen by measurement (BenchmarkAppend) on the project's machine: 2 cores
// shared with other work (load average 7 to 9 during the runs, so the
// figures move by ±30 %), virtual disk (one 4 KiB write+fdatasync ≈ 0.85 ms
// then). Durable appends of one 100-byte message with an id per call, from
// W writers each on its own stream ("each") or all on one ("one"); median
// of three 2-second runs; CPU is µs per append of the client process +
// the server process, at W=8:
//
//	go test -run '^$' -bench BenchmarkAppend -benchtime 2s -count 3 ./internal/store/redisstore/
//
//	appends/s, each | one                 W=1          W=8           W=64    CPU W=8
//	Redis 7.0.15, appendfsync always  2701|3238  10404|13528  11131|11325   42+60 | 28+44
//	JetStream 2.15.3, sync always     1571|1222   1066| 3978   3888| 3262  69+179 | 50+102
//	  + per-stream seq by CAS         2238|2281   1085|  890   1169|  332  56+182 | 416+599
//	Redis, no AOF (the shared one)    3896|6265  15007|18714  17375|22498   31+28 | 32+28
//	JetStream 2.9.10, no fsync        8081|8914  21148|20927  27275|33511   26+24 | 29+25
//	  + per-stream seq by CAS         7643|8096  16030| 1697  20197|  391   29+40 | 262+290
//
// "No fsync" rows are not durable (the shared nats-server 2.9 cannot fsync
// each message: it has no sync_interval always; the shared Redis keeps
// nothing on disk): they show the engines' cost apart from the disk.
// The durable rows are what Herald promises. Redis with appendfsync always
// writes and fsyncs its AOF once per event-loop pass for every client's
// commands, a group commit: concurrent appends share fsyncs, 4× the
// single-writer rate at W=8. JetStream 2.15 with sync_interval always
// fsyncs each message under the stream's lock and gains nothing from
// concurrency.
//
// Beyond speed, what Herald's contract needs is hard on JetStream and a
// few lines of Lua on Redis:
//
//   - Per-stream seq. JetStream numbers a JetStream stream, not a subject;
//     one JetStream stream per Herald stream (a user's inbox) does not
//     scale to millions. A seq per subject needs Herald's own counter in a
//     header, published with Nats-Expected-Last-Subject-Sequence and
//     retried on conflict: on one hot stream (a topic) it collapses to
//     hundreds of appends/s (rows "+ per-stream seq"). Redis: a counter in
//     the stream's meta hash, incremented by the append script.
//   - Idempotency. Nats-Msg-Id deduplicates within a time window (2 min by
//     default) held in server memory; Herald deduplicates while the
//     message is held (days, for an inbox), which would need an index of
//     our own, not atomic with the publish. Redis: the id index hash,
//     checked and written by the same script.
//   - Range by seq. With Herald's seq in a header, reading "after n" needs
//     a map from it to JetStream's seq. Redis: XRANGE on entry ids 0-<seq>.
//   - Trim and expiry. JetStream purges a subject down to a count, but its
//     age limit and (2.11+) message TTLs are per JetStream stream or
//     message, and 2.9 has no TTL. Redis: XTRIM MINID, XDEL, and a sorted
//     set of expiring messages.
//   - Per-device cursors. JetStream: a durable consumer per device (heavy
//     server state) or a KV bucket updated by compare-and-set loops.
//     Redis: a hash and max() in the ack script.
//   - Fsync. JetStream 2.9, the version here, cannot fsync per message;
//     2.10+ can, slowly (above). Redis: appendfsync always, grouped.
//
// Redis's costs: one thread (a single primary is the cluster's ceiling for
// appends, about 14 µs of Redis time per append script by INFO
// commandstats, plus the AOF), Lua scripts to maintain, and Redis Cluster
// needing changes (see below).
//
// # Layout
//
// Per stream, under a configurable key prefix P, with the stream's name as a
// hash tag (see keys):
//
//	P{s}:meta  hash: epoch, last (newest seq), mark (newest trimmed seq), gen, idx
//	P{s}:msgs  Redis stream, entry id 0-<seq>: i (id), p (payload), t (time), e (expiry)
//	P{s}:ids   hash: message id → "<seq>[:<expiry>]"
//	P{s}:acks  hash: device → cursor
//
// and for the whole store a sorted set Pexpiry ("<seq>:<stream>" scored by
// expiry) that Expire walks, and two small strings Pgen and Pboot (see
// Restarts and lost data).
//
// Messages are a Redis stream rather than a sorted set or hashes because
// the stream does what Range, Trim and Expire need natively: XRANGE with an
// exclusive start is Range by seq, XTRIM MINID is Trim by count, XDEL
// removes one expired message, and entries are kept in listpacks that store
// the field names once per node: a 100-byte message with a 16-byte id
// takes about 150 bytes of Redis memory in the stream and 85 in the id
// index (MEMORY USAGE over 10,000). Its last-generated-id survives deletions, which tells how
// far a stream went when its meta is lost. A sorted set would need the
// message encoded into its member (and decoded in Lua to check an expiry);
// a hash per message is a key per message and has no order.
//
// # Scripts
//
// Append is one script per call: it checks each id against the id index
// (a held, unexpired message with the id makes it a duplicate), assigns
// seqs, writes the messages, their index entries and expiry members, and
// moves last, atomically. Head, Range, Lookup and Ack are scripts too,
// because they may create the stream's meta (Head of a stream never
// appended to returns the epoch its first append will get) or find its data
// lost. Trim and Expire run one script per chunk of messages. Scripts are
// called by hash (EVALSHA); when Redis says NOSCRIPT (after a restart or a
// SCRIPT FLUSH) the store loads them again. There is no lock in the store:
// Redis serialises scripts, so two nodes appending to one stream get
// contiguous, unique seqs and share the id index.
//
// AppendMulti sends one script call per stream (its parts merged, in order)
// in one pipeline: one round trip, and for Redis with appendfsync always one
// fsync for all of them, but not one atomic write. Each stream's part is
// atomic; if the call fails (the connection drops mid-pipeline), some
// streams may have stored their part and others not, which is what the
// contract's "some parts may or may not be stored: retry with the same
// ids" covers.
//
// # Restarts and lost data
//
// Each stream has its own epoch, random, written with its meta by the first
// operation on it. A stream takes a new epoch when its scripts find that
// data it had acknowledged may be gone:
//
//   - its meta is missing while its messages, ids or cursors exist (a key
//     evicted or deleted): seqs continue after the highest any of them
//     shows, and first is the oldest message still held;
//   - its messages should be held (last > mark) but the stream key is gone:
//     nothing is held any more and seqs continue after last;
//   - its meta was written under an older generation. Pboot records the
//     run id of the Redis process last seen and whether it was durable
//     (see Durability, and not promoted from a replica). After a restart
//     or a failover Redis has no scripts (Redis 7 does not replicate its
//     script cache); the store checks Pboot before loading them again and
//     bumps Pgen unless both the old and the new process were durable: a
//     Redis that snapshots (RDB) or fsyncs every second can come back with
//     its last writes missing, meta and messages rolled back together, a
//     promoted replica can lack what the old primary acknowledged, and
//     only a new epoch keeps a seq from being handed out twice in one
//     epoch.
//
// When every key of a stream is gone (FLUSHALL, a restart without
// persistence) the stream simply starts again with a new epoch. An id index
// that vanished while its messages are held is rebuilt from them, without a
// new epoch. Lost cursors only cause redelivery (the contract allows a
// cursor to lag). Messages of a stream that lost its messages key may leave
// members in Pexpiry; Expire drops them.
// If Pexpiry itself is lost, expired messages are still never returned
// (every read checks the expiry), but they stay in Redis until trimmed:
// that loss is not detected.
//
// # Durability, and what the operator configures
//
// An Append returns once Redis has run its script. Whether that is on disk
// is Redis's configuration, and Herald's promise (an acknowledged push
// survives a crash) holds only with
//
//	appendonly yes
//	appendfsync always
//	no-appendfsync-on-rewrite no      (the default)
//
// with which Redis writes and fsyncs its AOF before replying. With
// appendfsync everysec a crash of Redis or of its machine loses up to a
// second of acknowledged appends; with RDB snapshots alone, everything
// since the last one; the epochs then tell clients, rather than hiding it
// (see above). Open reads the configuration (CONFIG GET; on a managed
// Redis where CONFIG is renamed it is "unknown") and the store rereads it
// every minute; Durability reports it in a sentence for the server's log.
//
// The operator also sets maxmemory-policy noeviction (the default; or any
// volatile-* policy, since the store sets no TTLs): eviction is detected
// as data loss, not prevented, and a full Redis answers OOM, which the
// store reports as store.ErrUnavailable (the API's 503). Redis must be 6.2
// or later (XRANGE with exclusive ranges, XTRIM MINID; Open checks), one
// primary, optionally with replicas and Sentinel: the store does not WAIT
// for replicas, so a failover can lose appends the old primary
// acknowledged; the new primary's streams take new epochs. Every node
// should keep time with NTP: expiry and age trims use each node's clock.
//
// When Redis does not answer, every operation fails with an error wrapping
// store.ErrUnavailable within Options.Timeout (2 s by default; at once when
// the connection is refused) or the caller's deadline, and Health reports
// it; the client reconnects by itself, and the scripts are loaded again.
// The client the store makes never retries a command: a script that ran
// but whose reply was lost would store its messages twice.
//
// # Redis Cluster
//
// Each stream's keys share a hash tag, so each stream script touches one
// slot except for Pgen (read by every stream script) and Pexpiry (written by
// Append, Trim and Expire), which live in other slots. This store therefore
// runs on one Redis primary. On Redis Cluster it would need the generation
// per slot (each primary's restart bumping its own) and the expiry index
// split per slot, e.g. a per-slot index of expiring messages under a tag of
// the slot's, written in the same script, with Expire walking every
// primary.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/store"
)

// Defaults of Options.
const (
	DefaultAddr           = "127.0.0.1:6379"
	DefaultPrefix         = "herald:"
	DefaultTimeout        = 2 * time.Second
	DefaultHealthInterval = time.Second
)

const (
	// rangePage bounds the messages one Range script returns; a larger
	// limit takes several calls.
	rangePage = 4096
	// rangeBudget bounds the entries one Range script looks at beyond its
	// page, so that a stream full of expired messages does not hold Redis
	// for long.
	rangeBudget = 1024
	// trimChunk bounds the messages one Trim script drops.
	trimChunk = 1024
	// expireChunk bounds the expiry index members one Expire step reads.
	expireChunk = 1024
	// bootInterval is how often the health loop checks Redis's process
	// and durability (see healthLoop).
	bootInterval = time.Minute
)

// Options configures Open.
type Options struct {
	// Client is the Redis client to use; the store does not close it. Nil:
	// the store makes its own from Addr, Password and DB. A client's own
	// retries should be off (MaxRetries -1): a retried script could store
	// messages without ids twice.
	Client *redis.Client
	// Addr is host:port of Redis when Client is nil; "" means DefaultAddr.
	Addr string
	// Password and DB are used when Client is nil.
	Password string
	DB       int
	// PoolSize bounds the connections of the client the store makes; 0
	// means go-redis's default (10 per CPU).
	PoolSize int
	// Timeout bounds dialling and every read and write of the client the
	// store makes, so that an operation fails promptly when Redis does not
	// answer; 0 means DefaultTimeout.
	Timeout time.Duration
	// Prefix begins every key of the store; "" means DefaultPrefix. Stores
	// sharing a prefix share their data. It must not contain a brace.
	Prefix string
	// Now is the clock for acceptance times, expiry and age trims; nil
	// means time.Now. Every node of a cluster should have the same time.
	Now func() time.Time
	// HealthInterval is how often the store pings Redis for Health; 0
	// means DefaultHealthInterval.
	HealthInterval time.Duration
}

// Store is a store.Store on Redis. Safe for concurrent use, by any number
// of Stores on the same Redis and prefix.
type Store struct {
	rdb     *redis.Client
	ownsRDB bool
	keys    keys
	now     func() time.Time
	timeout time.Duration

	closed atomic.Bool
	health atomic.Pointer[error] // nil while Redis answers

	reloadMu   sync.Mutex
	loads      atomic.Uint64 // script loads after boot checks
	bumps      atomic.Uint64 // generation bumps by this store
	durability atomic.Pointer[Durability]

	stop    chan struct{}
	stopped sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open connects to Redis, checks its version (6.2 or later) and its
// durability, records the Redis process it talks to (see the package
// comment) and loads the scripts. If Redis does not answer it returns an
// error wrapping store.ErrUnavailable.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	k, err := newKeys(opts.Prefix)
	if err != nil {
		return nil, err
	}
	s := &Store{keys: k, now: opts.Now, timeout: opts.Timeout, stop: make(chan struct{})}
	if s.now == nil {
		s.now = time.Now
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	s.rdb = opts.Client
	if s.rdb == nil {
		addr := opts.Addr
		if addr == "" {
			addr = DefaultAddr
		}
		s.rdb = redis.NewClient(&redis.Options{
			Addr:                  addr,
			Password:              opts.Password,
			DB:                    opts.DB,
			PoolSize:              opts.PoolSize,
			DialTimeout:           s.timeout,
			ReadTimeout:           s.timeout,
			WriteTimeout:          s.timeout,
			PoolTimeout:           s.timeout,
			ContextTimeoutEnabled: true,
			// A command is never sent twice: a script that ran but whose
			// reply was lost would store its messages again.
			MaxRetries:    -1,
			DialerRetries: 1,
			// Redis 7.0 has no maintenance notifications; do not ask.
			Protocol: 2,
		})
		s.ownsRDB = true
	}
	if err := s.reload(ctx, 0); err != nil {
		if s.ownsRDB {
			_ = s.rdb.Close()
		}
		return nil, s.wrap(ctx, "open", err)
	}
	interval := opts.HealthInterval
	if interval <= 0 {
		interval = DefaultHealthInterval
	}
	s.stopped.Add(1)
	go s.healthLoop(interval)
	return s, nil
}

// Close stops the health loop and closes the client if the store made it.
// Later calls return store.ErrClosed; Close may be called more than once.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.stop)
	s.stopped.Wait()
	if s.ownsRDB {
		if err := s.rdb.Close(); err != nil {
			return fmt.Errorf("redisstore: close: %w", err)
		}
	}
	return nil
}

// Health implements store.Store: nil while Redis answers (the store pings
// it every HealthInterval and learns from every operation), an error
// wrapping store.ErrUnavailable while it does not, store.ErrClosed after
// Close.
func (s *Store) Health() error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if p := s.health.Load(); p != nil {
		return *p
	}
	return nil
}

// healthLoop pings Redis every interval for Health and, about every
// bootInterval, runs boot again: so that Durability follows a CONFIG SET,
// and the durability recorded for the Redis process (which decides
// whether its restart bumps the generation) is the one it runs with.
func (s *Store) healthLoop(interval time.Duration) {
	defer s.stopped.Done()
	t := time.NewTicker(interval)
	defer t.Stop()
	lastBoot := time.Now()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
		err := s.rdb.Ping(ctx).Err()
		if err == nil && time.Since(lastBoot) >= bootInterval {
			lastBoot = time.Now()
			err = s.boot(ctx)
		}
		cancel()
		if err != nil && !s.closed.Load() {
			s.setUnhealthy(err)
		} else if err == nil {
			s.health.Store(nil)
		}
	}
}

func (s *Store) setUnhealthy(err error) {
	e := fmt.Errorf("%w: redis: %w", store.ErrUnavailable, err)
	s.health.Store(&e)
}

// GenerationBumps returns how many times this store found that Redis had
// restarted in a configuration that may have lost acknowledged writes and
// moved every stream to a new epoch.
func (s *Store) GenerationBumps() uint64 { return s.bumps.Load() }

// unavailablePrefixes are Redis error replies that mean it cannot serve
// now but will again by itself (or once an operator acts).
var unavailablePrefixes = []string{"LOADING", "READONLY", "MASTERDOWN", "OOM", "MISCONF", "BUSY", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN"}

// isUnavailable reports whether err means Redis cannot be used now: no
// connection, a timeout, or one of unavailablePrefixes.
func isUnavailable(err error) bool {
	var rerr redis.Error
	if errors.As(err, &rerr) && !errors.Is(err, redis.Nil) {
		msg := rerr.Error()
		for _, p := range unavailablePrefixes {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, context.DeadlineExceeded) || isConnErr(err)
}

// isConnErr recognises connection failures that are not net.Errors (a
// connection closed by the peer reads as io.EOF or "connection reset").
func isConnErr(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "EOF") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection refused")
}

// wrap turns an error of an operation into what the store returns: ctx's
// error if ctx ended (wrapping store.ErrUnavailable too if Redis was not
// answering), store.ErrClosed after Close, an error wrapping
// store.ErrUnavailable (and marking the store unhealthy) when Redis is
// unreachable or refuses service, and otherwise the error with context.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if s.closed.Load() {
		return fmt.Errorf("redisstore: %s: %w", op, store.ErrClosed)
	}
	cerr := ctx.Err()
	if deadline, ok := ctx.Deadline(); ok && cerr == nil && !time.Now().Before(deadline) {
		cerr = context.DeadlineExceeded // the socket's deadline (ctx's) fired first
	}
	if cerr != nil {
		if errors.Is(cerr, context.DeadlineExceeded) {
			return fmt.Errorf("redisstore: %s: %w: %w", op, store.ErrUnavailable, cerr)
		}
		return fmt.Errorf("redisstore: %s: %w", op, cerr)
	}
	if isUnavailable(err) {
		s.setUnhealthy(err)
		return fmt.Errorf("redisstore: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	return fmt.Errorf("redisstore: %s: %w", op, err)
}

// check is the common prologue of every operation.
func (s *Store) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

// ok records that Redis answered.
func (s *Store) ok() {
	if s.health.Load() != nil {
		s.health.Store(nil)
	}
}

// Prefix returns the prefix of the store's keys.
func (s *Store) Prefix() string { return s.keys.prefix }
