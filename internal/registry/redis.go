package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/redis/go-redis/v9"
)

// RedisOptions configures a Redis registry.
type RedisOptions struct {
	// Client is the Redis to use, as it is; Close leaves it open. It must
	// be a standalone Redis or one behind Sentinel (the scripts touch keys
	// of several users and nodes), not Redis Cluster.
	Client redis.UniversalClient
	// Addr is the host:port of a standalone Redis, used when Client is nil.
	// The registry then makes its own client, sized for connection storms
	// and failing fast when Redis is down (see NewRedis), and closes it.
	Addr string
	// Prefix starts every key of the registry; default "herald:". Nodes of
	// one cluster use the same prefix.
	Prefix string
	// Node is this node: ID (required, unique in the cluster, no spaces)
	// and the addresses it advertises. Sessions, Load and Seen are filled
	// in at every renewal; Started defaults to when NewRedis was called.
	Node NodeInfo
	// Lease is how long the node's lease lives without a renewal: how long
	// a dead node's sessions may still look online. Default 5s.
	Lease time.Duration
	// Renew is how often the lease is renewed (and the node's info and
	// load published, and dead nodes looked for). Default Lease/5.
	Renew time.Duration
	// Load, if set, is called at every renewal for the load to publish.
	Load func() Load
	// Addrs, if set, is called at every renewal for the addresses to
	// publish when Node has none (they are known only once the listeners
	// are open).
	Addrs func() (wsURL, tcpAddr string)
	// Sessions, if set, lists this node's sessions that are claimed and not
	// released. After the node's lease was lost (the node was paused or
	// cut off from Redis for longer than the lease, or Redis restarted
	// empty) the registry claims them again from this list, as the
	// connections are still there. Without it, those sessions stay out of
	// the registry until their clients reconnect.
	Sessions iter.Seq[*Session]
	// Lost, if set, is called for a session that could not be claimed
	// again after a lost lease because its device has a live session
	// elsewhere now (the device logged in on another node meanwhile). The
	// caller should close its connection, as replaced.
	Lost func(s *Session, holder Session)
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Defaults of RedisOptions.
const (
	DefaultLease  = 5 * time.Second
	DefaultPrefix = "herald:"
)

// Bounds of the background work.
const (
	batchSize  = 512     // sessions per pipeline or cleanup call
	maxPending = 1 << 18 // releases waiting for Redis to come back
)

// Redis is the registry of a cluster, shared through Redis. It keeps
// nothing per session in the process: Claim and Release work from the
// *Session the caller passes, and Count is one atomic counter. Releases
// that failed wait in a list while Redis is unreachable, to be done when
// it is back.
type Redis struct {
	c         redis.UniversalClient
	ownClient bool
	prefix    string
	node      NodeInfo
	inc       string // this incarnation: random, new at every NewRedis
	lease     time.Duration
	renew     time.Duration
	loadFn    func() Load
	addrsFn   func() (string, string)
	sessions  iter.Seq[*Session]
	lost      func(*Session, Session)
	log       *slog.Logger

	leaseKey, setKey, nodesKey string

	claimS, releaseS, lookupS, leaseS, nodesS, cleanupS, leaveS *redis.Script

	count  atomic.Int64
	closed atomic.Bool

	ctx     context.Context // cancelled by Close and kill
	cancel  context.CancelFunc
	done    chan struct{} // closed when the renewal loop has returned
	wake    chan struct{} // asks the loop for a renewal now
	calls   chan *call    // claims and releases for the pipeline workers
	workers sync.WaitGroup

	beforeRenew func() // test hook, called before each renewal

	mu          sync.Mutex
	lastRenewed time.Time        // start of the last successful renewal
	failure     error            // the last failure, until a renewal succeeds
	leaseLost   bool             // the lease was found expired; sessions not yet claimed again
	takenBy     string           // another incarnation holds this node id
	reconciling bool             // releases are also queued, to be redone after the re-claim
	pending     []pendingRelease // releases to do (again) when Redis answers
	dropped     int              // pending releases dropped over maxPending
}

var _ Registry = (*Redis)(nil)

// pendingRelease is a release to do again.
type pendingRelease struct {
	app, user, device, id string
}

// wireSession is a session as stored in Redis.
type wireSession struct {
	ID        string `json:"id"`
	Node      string `json:"node"`
	Inc       string `json:"inc"`
	ConnID    uint64 `json:"conn"`
	Since     int64  `json:"since"` // Unix nanoseconds
	Transport string `json:"tr,omitempty"`
	Remote    string `json:"remote,omitempty"`
}

// NewRedis opens the registry of node opts.Node on Redis: it takes the
// node's lease (from an earlier incarnation of the same node id too, whose
// sessions it removes) and renews it in the background until Close.
//
// Claims and releases are pipelined: a few workers send whatever is
// queued as one pipeline each, so a storm of claims costs round trips by
// the hundred claims, not one each (redis_batch.go). Lookups are one
// script, one round trip.
//
// When it makes its own client (opts.Addr), operations fail fast while
// Redis is down: one dial attempt per operation, 1s dial, read and write
// timeouts, one retry on a broken connection, and after as many failed
// dials as the pool has connections (64) the pool answers at once until a
// background dial (one a second) succeeds.
func NewRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	return openRedis(ctx, opts, nil)
}

func openRedis(ctx context.Context, opts RedisOptions, beforeRenew func()) (*Redis, error) {
	if opts.Node.ID == "" || strings.ContainsFunc(opts.Node.ID, unicode.IsSpace) {
		return nil, fmt.Errorf("registry: node id %q: it must be set and have no spaces", opts.Node.ID)
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Lease <= 0 {
		opts.Lease = DefaultLease
	}
	if opts.Renew <= 0 {
		opts.Renew = opts.Lease / 5
	}
	if opts.Renew >= opts.Lease {
		return nil, fmt.Errorf("registry: renewal interval %v is not shorter than the lease %v", opts.Renew, opts.Lease)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Node.Started.IsZero() {
		opts.Node.Started = time.Now()
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("registry: incarnation id: %w", err)
	}
	r := &Redis{
		c:           opts.Client,
		prefix:      opts.Prefix,
		node:        opts.Node,
		inc:         hex.EncodeToString(b[:]),
		lease:       opts.Lease,
		renew:       opts.Renew,
		loadFn:      opts.Load,
		addrsFn:     opts.Addrs,
		sessions:    opts.Sessions,
		lost:        opts.Lost,
		log:         opts.Logger.With("registry", "redis", "node", opts.Node.ID),
		claimS:      redis.NewScript(claimLua),
		releaseS:    redis.NewScript(releaseLua),
		lookupS:     redis.NewScript(lookupLua),
		leaseS:      redis.NewScript(leaseLua),
		nodesS:      redis.NewScript(nodesLua),
		cleanupS:    redis.NewScript(cleanupLua),
		leaveS:      redis.NewScript(leaveLua),
		done:        make(chan struct{}),
		wake:        make(chan struct{}, 1),
		calls:       make(chan *call, batchSize),
		beforeRenew: beforeRenew,
	}
	r.leaseKey = r.prefix + "n:" + r.node.ID
	r.setKey = r.incSetKey(r.node.ID, r.inc)
	r.nodesKey = r.prefix + "nodes"
	if r.c == nil {
		if opts.Addr == "" {
			return nil, errors.New("registry: RedisOptions needs a Client or an Addr")
		}
		r.c = redis.NewClient(&redis.Options{
			Addr:                  opts.Addr,
			PoolSize:              64,
			DialTimeout:           time.Second,
			DialerRetries:         1,
			ReadTimeout:           time.Second,
			WriteTimeout:          time.Second,
			PoolTimeout:           2 * time.Second,
			MaxRetries:            1,
			ContextTimeoutEnabled: true,
			DisableIdentity:       true,
		})
		r.ownClient = true
	}
	start := time.Now()
	res, err := r.renewLease(ctx, true)
	if err != nil {
		r.closeClient()
		return nil, r.opFailed(ctx, "open", err)
	}
	if res.state == "took" {
		r.log.Warn("registry: this node id was live in the registry: taken over (a restart within the lease, or another process with this node id, which is now fenced off)", "previous", res.leaseInc)
	}
	for _, old := range []string{res.leaseInc, res.nodesInc} {
		if old != "" && old != r.inc {
			if err := r.cleanup(ctx, r.node.ID, old); err != nil {
				r.closeClient()
				return nil, r.opFailed(ctx, "remove the sessions of this node's previous incarnation", err)
			}
		}
	}
	r.lastRenewed = start
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go r.loop()
	for range pipelineWorkers {
		r.workers.Add(1)
		go r.pipeline()
	}
	return r, nil
}

func (r *Redis) userKey(app, user string) string { return r.prefix + "u:" + app + " " + user }

func (r *Redis) incSetKey(node, inc string) string { return r.prefix + "s:" + node + " " + inc }

func member(app, user, device string) string { return app + " " + user + " " + device }

func (r *Redis) check(ctx context.Context, op string) error {
	if r.closed.Load() {
		return ErrClosed
	}
	return ctxErr(ctx, op)
}

// opFailed turns a Redis error into the registry's: the context's error if
// ctx is done, ErrClosed after Close, and otherwise ErrUnavailable, which
// Health reports until the next successful renewal.
func (r *Redis) opFailed(ctx context.Context, op string, err error) error {
	if ce := ctx.Err(); ce != nil {
		return fmt.Errorf("registry: %s: %w", op, ce)
	}
	if r.closed.Load() {
		return ErrClosed
	}
	e := fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	r.mu.Lock()
	r.failure = e
	r.mu.Unlock()
	return e
}

// errLease is what operations return while this node's lease is not its
// own.
func (r *Redis) errLease(op string) error {
	return fmt.Errorf("%w: %s: %w: it is being renewed", ErrUnavailable, op, ErrLeaseLost)
}

func (r *Redis) encode(s *Session, id string) string {
	b, _ := json.Marshal(wireSession{ID: id, Node: s.Node, Inc: r.inc, ConnID: s.ConnID,
		Since: s.Since.UnixNano(), Transport: s.Transport, Remote: s.Remote})
	return string(b)
}

func decode(app, user, device, v string) (Session, error) {
	var w wireSession
	if err := json.Unmarshal([]byte(v), &w); err != nil {
		return Session{}, fmt.Errorf("registry: bad session of %s/%s/%s in Redis: %w", app, user, device, err)
	}
	return Session{App: app, User: user, Device: device, Node: w.Node, ConnID: w.ConnID,
		Since: time.Unix(0, w.Since).UTC(), Transport: w.Transport, Remote: w.Remote}, nil
}

// claimArgs are the keys and arguments of claimLua for s.
func (r *Redis) claimArgs(s *Session, replace bool, mode string) ([]string, []any) {
	id := s.ID()
	rep := "0"
	if replace {
		rep = "1"
	}
	return []string{r.userKey(s.App, s.User), r.setKey, r.leaseKey},
		[]any{s.Device, r.encode(s, id), id, r.node.ID, r.inc, rep, member(s.App, s.User, s.Device), r.prefix, mode, s.ConnID}
}

// Claim implements Registry. s.Node must be this node's id.
func (r *Redis) Claim(ctx context.Context, s *Session, replace bool) (prev Session, hadPrev bool, err error) {
	if err := r.check(ctx, "claim"); err != nil {
		return Session{}, false, err
	}
	if s.Node != r.node.ID {
		return Session{}, false, fmt.Errorf("registry: claim of a session of node %q on node %q", s.Node, r.node.ID)
	}
	keys, args := r.claimArgs(s, replace, "claim")
	p := pendingRelease{s.App, s.User, s.Device, s.ID()}
	cmd, err := r.run(ctx, r.claimS, func(cmd *redis.Cmd) {
		// The caller gave up waiting and will not release the session if
		// the claim took it: release it here.
		if res, err := cmd.StringSlice(); err != nil || (len(res) > 0 && (res[0] == "ok" || res[0] == "replaced")) {
			r.addPending(p)
		}
	}, keys, args...)
	if err != nil {
		return Session{}, false, r.opFailed(ctx, "claim", err)
	}
	res, err := cmd.StringSlice()
	if err != nil {
		// The script may have run with its answer lost: release the
		// session when Redis answers, as the caller will not.
		r.addPending(p)
		return Session{}, false, r.opFailed(ctx, "claim", err)
	}
	return r.claimResult(s, res)
}

func (r *Redis) claimResult(s *Session, res []string) (Session, bool, error) {
	switch {
	case len(res) == 1 && res[0] == "ok":
		r.count.Add(1)
		return Session{}, false, nil
	case len(res) == 2 && res[0] == "replaced":
		r.count.Add(1)
		prev, err := decode(s.App, s.User, s.Device, res[1])
		if err != nil {
			r.log.Error("registry: the replaced session is unreadable", "err", err)
			return Session{}, false, nil
		}
		return prev, true, nil
	case len(res) == 2 && res[0] == "dup":
		prev, err := decode(s.App, s.User, s.Device, res[1])
		if err != nil {
			return Session{}, false, err
		}
		return prev, true, fmt.Errorf("%w: device %q of user %q is on node %q (session %s)", ErrDuplicate, prev.Device, prev.User, prev.Node, prev.ID())
	case len(res) == 1 && res[0] == "lease":
		r.wakeLoop()
		return Session{}, false, r.errLease("claim")
	}
	return Session{}, false, fmt.Errorf("registry: claim: unexpected answer %q", res)
}

// Release implements Registry.
func (r *Redis) Release(ctx context.Context, s *Session) error {
	if r.closed.Load() {
		return ErrClosed
	}
	r.count.Add(-1)
	p := pendingRelease{s.App, s.User, s.Device, s.ID()}
	r.mu.Lock()
	if r.reconciling {
		r.pushPending(p) // done now and again after the re-claim, which may have listed s
	}
	r.mu.Unlock()
	if err := ctxErr(ctx, "release"); err != nil {
		r.addPending(p)
		return err
	}
	cmd, err := r.run(ctx, r.releaseS, nil, []string{r.userKey(p.app, p.user), r.setKey}, p.device, p.id, member(p.app, p.user, p.device))
	if err == nil {
		err = cmd.Err()
	}
	if err != nil {
		r.addPending(p)
		return r.opFailed(ctx, "release", err)
	}
	return nil
}

func (r *Redis) addPending(p pendingRelease) {
	r.mu.Lock()
	r.pushPending(p)
	r.mu.Unlock()
}

// pushPending queues p; r.mu is held.
func (r *Redis) pushPending(p pendingRelease) {
	if len(r.pending) >= maxPending {
		r.dropped++
		return
	}
	r.pending = append(r.pending, p)
}

// Lookup implements Registry: one round trip.
func (r *Redis) Lookup(ctx context.Context, app, user string) ([]Session, error) {
	if err := r.check(ctx, "lookup"); err != nil {
		return nil, err
	}
	res, err := r.lookupS.RunRO(ctx, r.c, []string{r.userKey(app, user)}, r.prefix).StringSlice()
	if err != nil {
		return nil, r.opFailed(ctx, "lookup", err)
	}
	out := make([]Session, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		s, err := decode(app, user, res[i], res[i+1])
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Device < out[j].Device })
	return out, nil
}

// Count implements Registry: the sessions this node claimed and has not
// released.
func (r *Redis) Count() int { return int(r.count.Load()) }

// Nodes implements Registry: the nodes whose lease is live.
func (r *Redis) Nodes(ctx context.Context) ([]NodeInfo, error) {
	if err := r.check(ctx, "nodes"); err != nil {
		return nil, err
	}
	live, _, err := r.scanNodes(ctx)
	if err != nil {
		return nil, r.opFailed(ctx, "nodes", err)
	}
	return live, nil
}

// scanNodes returns the live nodes and the dead incarnations (node, inc
// pairs) whose sessions are still to be removed.
func (r *Redis) scanNodes(ctx context.Context) ([]NodeInfo, []string, error) {
	res, err := r.nodesS.Run(ctx, r.c, []string{r.nodesKey}, r.prefix).Slice()
	if err != nil {
		return nil, nil, err
	}
	if len(res) != 2 {
		return nil, nil, fmt.Errorf("registry: nodes: unexpected answer %v", res)
	}
	infos, _ := res[0].([]any)
	deadAny, _ := res[1].([]any)
	live := make([]NodeInfo, 0, len(infos))
	for _, v := range infos {
		s, _ := v.(string)
		var n NodeInfo
		if err := json.Unmarshal([]byte(s), &n); err != nil {
			return nil, nil, fmt.Errorf("registry: bad node info in Redis: %w", err)
		}
		live = append(live, n)
	}
	sort.Slice(live, func(i, j int) bool { return live[i].ID < live[j].ID })
	dead := make([]string, 0, len(deadAny))
	for _, v := range deadAny {
		s, _ := v.(string)
		dead = append(dead, s)
	}
	return live, dead, nil
}

// Health implements Registry.
func (r *Redis) Health() error {
	if r.closed.Load() {
		return ErrClosed
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.takenBy != "" {
		return fmt.Errorf("%w: %w: node id %q is held by another process (incarnation %s)", ErrUnavailable, ErrLeaseLost, r.node.ID, r.takenBy)
	}
	if age := time.Since(r.lastRenewed); age > r.lease {
		if r.failure != nil {
			return fmt.Errorf("%w: lease last renewed %v ago (lease %v): %w", ErrLeaseLost, age.Round(time.Millisecond), r.lease, r.failure)
		}
		return fmt.Errorf("%w: %w: last renewed %v ago (lease %v)", ErrUnavailable, ErrLeaseLost, age.Round(time.Millisecond), r.lease)
	}
	if r.failure != nil {
		return r.failure
	}
	if r.leaseLost {
		return fmt.Errorf("%w: %w: this node's sessions are being claimed again", ErrUnavailable, ErrLeaseLost)
	}
	return nil
}

// Close implements Registry: it stops the renewals, gives up the lease
// and removes the node's remaining sessions, so that they are gone at
// once rather than when the lease would have expired.
func (r *Redis) Close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	r.cancel()
	<-r.done
	r.workers.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), r.lease)
	defer cancel()
	err := r.leaveS.Run(ctx, r.c, []string{r.leaseKey}, r.inc).Err()
	if err == nil {
		err = r.cleanup(ctx, r.node.ID, r.inc)
	}
	if err != nil {
		err = fmt.Errorf("registry: close: leave the cluster (the lease expires by itself): %w", err)
	}
	return errors.Join(err, r.closeClient())
}

// kill stops the registry as a crash would: no more renewals, and nothing
// removed from Redis. For tests.
func (r *Redis) kill() {
	if !r.closed.CompareAndSwap(false, true) {
		return
	}
	r.cancel()
	<-r.done
	r.workers.Wait()
	_ = r.closeClient()
}

func (r *Redis) closeClient() error {
	if !r.ownClient {
		return nil
	}
	return r.c.Close()
}

func (r *Redis) wakeLoop() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// leaseResult is leaseLua's answer.
type leaseResult struct {
	state, leaseInc, nodesInc string
}

// renewLease writes this node's lease with its current info.
func (r *Redis) renewLease(ctx context.Context, force bool) (leaseResult, error) {
	n := r.node
	n.Sessions = r.Count()
	n.Seen = time.Now()
	if r.loadFn != nil {
		n.Load = r.loadFn()
	}
	if r.addrsFn != nil && n.WSURL == "" && n.TCPAddr == "" {
		n.WSURL, n.TCPAddr = r.addrsFn()
	}
	info, err := json.Marshal(n)
	if err != nil {
		return leaseResult{}, fmt.Errorf("registry: node info: %w", err)
	}
	f := "0"
	if force {
		f = "1"
	}
	res, err := r.leaseS.Run(ctx, r.c, []string{r.leaseKey, r.nodesKey}, r.node.ID, r.inc, info, r.lease.Milliseconds(), f).StringSlice()
	if err != nil {
		return leaseResult{}, err
	}
	if len(res) != 3 {
		return leaseResult{}, fmt.Errorf("registry: lease: unexpected answer %q", res)
	}
	return leaseResult{res[0], res[1], res[2]}, nil
}

// loop renews the lease every r.renew until Close.
func (r *Redis) loop() {
	defer close(r.done)
	t := time.NewTicker(r.renew)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
		if r.beforeRenew != nil {
			r.beforeRenew()
		}
		r.tick(r.ctx)
	}
}

// tick renews the lease; then, if the lease had been lost, claims this
// node's sessions again; redoes releases that failed; and removes the
// sessions of dead nodes.
func (r *Redis) tick(ctx context.Context) {
	if !r.renewNow(ctx) {
		return
	}
	r.mu.Lock()
	lost := r.leaseLost
	r.mu.Unlock()
	if lost {
		if err := r.reclaim(ctx); err != nil {
			r.fail(ctx, "claim this node's sessions again", err)
			return
		}
	}
	if err := r.redoReleases(ctx); err != nil {
		r.fail(ctx, "redo releases", err)
		return
	}
	if err := r.removeDead(ctx); err != nil {
		r.fail(ctx, "remove dead nodes' sessions", err)
	}
}

// renewNow renews the lease and records the outcome; it reports whether
// the lease is this node's now. Another incarnation of this node id that
// held the id meanwhile and is gone has its sessions removed.
func (r *Redis) renewNow(ctx context.Context) bool {
	rctx, cancel := context.WithTimeout(ctx, r.lease)
	defer cancel()
	start := time.Now()
	res, err := r.renewLease(rctx, false)
	if err != nil {
		r.fail(ctx, "renew the lease", err)
		return false
	}
	r.mu.Lock()
	switch res.state {
	case "taken":
		if r.takenBy != res.leaseInc {
			r.log.Error("registry: another process took this node id; this one is fenced off until that one's lease expires", "incarnation", res.leaseInc)
		}
		r.takenBy = res.leaseInc
		r.mu.Unlock()
		return false
	case "new":
		if !r.leaseLost {
			r.log.Warn("registry: this node's lease had expired (paused, cut off, or Redis restarted); claiming its sessions again", "last_renewed", r.lastRenewed)
		}
		r.leaseLost = true
	}
	r.takenBy = ""
	r.lastRenewed = start
	r.failure = nil
	r.mu.Unlock()
	if res.nodesInc != "" && res.nodesInc != r.inc {
		if err := r.cleanup(ctx, r.node.ID, res.nodesInc); err != nil {
			r.fail(ctx, "remove the sessions of another incarnation of this node id", err)
			return false
		}
	}
	return true
}

// fail records a failure of background work for Health.
func (r *Redis) fail(ctx context.Context, what string, err error) {
	if ctx.Err() != nil {
		return // closing
	}
	e := fmt.Errorf("%w: %s: %w", ErrUnavailable, what, err)
	r.mu.Lock()
	first := r.failure == nil
	r.failure = e
	r.mu.Unlock()
	if first {
		r.log.Warn("registry: Redis failed", "err", e)
	}
}

// reclaim claims every session that opts.Sessions lists again, after the
// lease was lost. A session whose device has a live session elsewhere
// now is reported to opts.Lost. Releases that happen meanwhile are queued
// to be redone after it, as the list may have been read before them.
func (r *Redis) reclaim(ctx context.Context) error {
	if r.sessions == nil {
		r.mu.Lock()
		r.leaseLost = false
		r.mu.Unlock()
		r.log.Warn("registry: lease regained; no session list to claim this node's sessions again (RedisOptions.Sessions)")
		return nil
	}
	r.mu.Lock()
	r.reconciling = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.reconciling = false
		r.mu.Unlock()
	}()
	claimed, lost := 0, 0
	batch := make([]*Session, 0, batchSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		// Keep the lease while a long list is claimed.
		r.mu.Lock()
		due := time.Since(r.lastRenewed) > r.renew
		r.mu.Unlock()
		if due && !r.renewNow(ctx) {
			return errors.New("the lease could not be renewed")
		}
		// A restarted Redis has no scripts: load it before pipelining.
		if err := r.claimS.Load(ctx, r.c).Err(); err != nil {
			return err
		}
		p := r.c.Pipeline()
		cmds := make([]*redis.Cmd, len(batch))
		for i, s := range batch {
			keys, args := r.claimArgs(s, false, "reassert")
			cmds[i] = p.EvalSha(ctx, r.claimS.Hash(), keys, args...)
		}
		_, _ = p.Exec(ctx)
		for i, s := range batch {
			res, err := cmds[i].StringSlice()
			if err != nil {
				return err
			}
			switch {
			case len(res) >= 1 && (res[0] == "ok" || res[0] == "replaced"):
				claimed++
			case len(res) == 2 && res[0] == "dup":
				lost++
				holder, err := decode(s.App, s.User, s.Device, res[1])
				if err != nil {
					return err
				}
				r.log.Info("registry: session not claimed again: its device is online elsewhere", "user", s.User, "device", s.Device, "session", s.ID(), "holder", holder.ID())
				if r.lost != nil {
					r.lost(s, holder)
				}
			case len(res) == 1 && res[0] == "lease":
				return errors.New("the lease was lost again")
			default:
				return fmt.Errorf("unexpected answer %q", res)
			}
		}
		batch = batch[:0]
		return nil
	}
	for s := range r.sessions {
		batch = append(batch, s)
		if len(batch) == batchSize {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	r.mu.Lock()
	r.leaseLost = false
	r.mu.Unlock()
	r.log.Info("registry: this node's sessions claimed again", "claimed", claimed, "lost", lost)
	return nil
}

// redoReleases does the releases that failed (or that raced with a
// re-claim) again, pipelined.
func (r *Redis) redoReleases(ctx context.Context) error {
	r.mu.Lock()
	todo := r.pending
	r.pending = nil
	dropped := r.dropped
	r.dropped = 0
	r.mu.Unlock()
	if dropped > 0 {
		r.log.Error("registry: releases dropped while Redis was unreachable: those sessions stay online until their devices log in again or this node restarts", "dropped", dropped)
	}
	if len(todo) == 0 {
		return nil
	}
	if err := r.releaseS.Load(ctx, r.c).Err(); err != nil {
		r.requeue(todo)
		return err
	}
	for len(todo) > 0 {
		n := min(len(todo), batchSize)
		p := r.c.Pipeline()
		for _, x := range todo[:n] {
			p.EvalSha(ctx, r.releaseS.Hash(), []string{r.userKey(x.app, x.user), r.setKey}, x.device, x.id, member(x.app, x.user, x.device))
		}
		if _, err := p.Exec(ctx); err != nil {
			r.requeue(todo)
			return err
		}
		todo = todo[n:]
	}
	return nil
}

// requeue puts releases back in front of those queued meanwhile.
func (r *Redis) requeue(todo []pendingRelease) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = append(todo, r.pending...)
	if over := len(r.pending) - maxPending; over > 0 {
		r.pending = r.pending[:maxPending]
		r.dropped += over
	}
}

// removeDead removes the sessions of incarnations whose lease expired.
func (r *Redis) removeDead(ctx context.Context) error {
	_, dead, err := r.scanNodes(ctx)
	if err != nil {
		return err
	}
	for i := 0; i+1 < len(dead); i += 2 {
		node, inc := dead[i], dead[i+1]
		if node == r.node.ID && inc == r.inc {
			continue // this node's lease expired between two scripts: the next renewal claims again
		}
		if err := r.cleanup(ctx, node, inc); err != nil {
			return err
		}
	}
	return nil
}

// cleanup removes the sessions of node's incarnation inc, batchSize at a
// time, until none is left or the incarnation turns out live.
func (r *Redis) cleanup(ctx context.Context, node, inc string) error {
	keys := []string{r.incSetKey(node, inc), r.nodesKey, r.prefix + "n:" + node}
	total := 0
	for {
		n, err := r.cleanupS.Run(ctx, r.c, keys, r.prefix, node, inc, batchSize).Int()
		if err != nil {
			return err
		}
		if n <= 0 {
			if total > 0 || n == 0 {
				r.log.Debug("registry: removed a dead incarnation's sessions", "dead_node", node, "incarnation", inc, "sessions", total)
			}
			return nil
		}
		total += n
	}
}
