package registry_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/registry/registrytest"
)

// The lease of the tests' nodes: short, so that a dead node's sessions go
// quickly, and long enough that a loaded machine renews in time.
const (
	testLease = 2 * time.Second
	testRenew = 100 * time.Millisecond
)

// redisAddr returns the shared test Redis (HERALD_TEST_REDIS, default
// 127.0.0.1:6379). When it does not answer the test fails if CI is set
// and is skipped otherwise.
func redisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second, DialerRetries: 1, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Redis at %s (HERALD_TEST_REDIS) is needed and does not answer: %v", addr, err)
		}
		t.Skipf("skipped: no Redis at %s (set HERALD_TEST_REDIS): %v", addr, err)
	}
	return addr
}

// testPrefix returns a key prefix of the test's own and deletes every key
// under it when the test ends (after the registries, closed by cleanups
// registered later, are gone).
func testPrefix(t testing.TB, addr string) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", ".", " ", "_").Replace(t.Name())
	prefix := "herald-test:" + name + ":" + hex.EncodeToString(b[:]) + ":"
	t.Cleanup(func() {
		c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys, err := c.Keys(ctx, prefix+"*").Result()
		if err == nil && len(keys) > 0 {
			err = c.Del(ctx, keys...).Err()
		}
		if err != nil {
			t.Errorf("cleaning up %s*: %v", prefix, err)
		}
	})
	return prefix
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// openNode opens a node of the cluster at addr, prefix, closed at the end
// of the test.
func openNode(t testing.TB, addr, prefix string, node registry.NodeInfo, mutate ...func(*registry.RedisOptions)) *registry.Redis {
	t.Helper()
	opts := registry.RedisOptions{Addr: addr, Prefix: prefix, Node: node, Lease: testLease, Renew: testRenew, Logger: quiet()}
	for _, m := range mutate {
		m(&opts)
	}
	r, err := registry.NewRedis(context.Background(), opts)
	if err != nil {
		t.Fatalf("NewRedis(%s): %v", node.ID, err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func TestRedisConformance(t *testing.T) {
	addr := redisAddr(t)
	registrytest.Run(t, registrytest.Config{
		Cluster: true,
		Lease:   testLease,
		NewCluster: func(t *testing.T) registrytest.NewNode {
			prefix := testPrefix(t, addr)
			return func(node registry.NodeInfo, load func() registry.Load) registry.Registry {
				return openNode(t, addr, prefix, node, func(o *registry.RedisOptions) { o.Load = load })
			}
		},
		Kill: func(t *testing.T, r registry.Registry) { r.(*registry.Redis).Kill() },
	})
}

// tracker is what a node keeps anyway: its live sessions. It gives the
// registry its Sessions list, and records what Lost reports.
type tracker struct {
	mu   sync.Mutex
	live map[*registry.Session]bool
	lost []string // "session id lost to holder id"
}

func newTracker() *tracker { return &tracker{live: map[*registry.Session]bool{}} }

func (k *tracker) options(o *registry.RedisOptions) {
	o.Sessions = k.sessions()
	o.Lost = func(s *registry.Session, holder registry.Session) {
		k.mu.Lock()
		defer k.mu.Unlock()
		k.lost = append(k.lost, s.ID()+" lost to "+holder.ID())
	}
}

func (k *tracker) sessions() iter.Seq[*registry.Session] {
	return func(yield func(*registry.Session) bool) {
		k.mu.Lock()
		list := make([]*registry.Session, 0, len(k.live))
		for s := range k.live {
			list = append(list, s)
		}
		k.mu.Unlock()
		for _, s := range list {
			if !yield(s) {
				return
			}
		}
	}
}

func (k *tracker) lostList() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.lost)
}

// claim claims s on r and tracks it.
func (k *tracker) claim(t testing.TB, r registry.Registry, s *registry.Session) {
	t.Helper()
	if _, _, err := r.Claim(t.Context(), s, false); err != nil {
		t.Fatalf("Claim(%s): %v", s.ID(), err)
	}
	k.mu.Lock()
	k.live[s] = true
	k.mu.Unlock()
}

// release stops tracking s and releases it on r, returning Release's error.
func (k *tracker) release(t testing.TB, r registry.Registry, s *registry.Session) error {
	k.mu.Lock()
	delete(k.live, s)
	k.mu.Unlock()
	return r.Release(t.Context(), s)
}

func session(node, user, device string, conn uint64) *registry.Session {
	return &registry.Session{App: "app", User: user, Device: device, Node: node, ConnID: conn,
		Since: time.Unix(1_900_000_000, int64(conn)), Transport: "tcp", Remote: "198.51.100.7:4000"}
}

// devices renders a lookup as "device@node" words.
func devices(list []registry.Session) string {
	var w []string
	for _, s := range list {
		w = append(w, s.Device+"@"+s.ID())
	}
	return strings.Join(w, " ")
}

// waitFor polls cond until it returns nil or the deadline passes. It waits
// for lease expiry and for what the renewal loop does in the background.
func waitFor(t testing.TB, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting %v for %s: %v", d, what, err)
		}
		time.Sleep(10 * time.Millisecond) // a poll interval: the deadline above bounds the wait
	}
}

func wantLookup(t testing.TB, r registry.Registry, user, want string) error {
	got, err := r.Lookup(t.Context(), "app", user)
	if err != nil {
		return err
	}
	if devices(got) != want {
		return fmt.Errorf("Lookup(%s) = %q; want %q", user, devices(got), want)
	}
	return nil
}

// redisServer is a redis-server of a test's own, on a free loopback port,
// with its files in a temporary directory.
type redisServer struct {
	t    testing.TB
	bin  string
	dir  string
	addr string
	cmd  *exec.Cmd
}

func startRedisServer(t testing.TB) *redisServer {
	t.Helper()
	bin := "/usr/bin/redis-server"
	if _, err := os.Stat(bin); err != nil {
		if p, err2 := exec.LookPath("redis-server"); err2 == nil {
			bin = p
		} else if os.Getenv("CI") != "" {
			t.Fatalf("redis-server is needed for the outage tests: %v", err)
		} else {
			t.Skipf("skipped: no redis-server (apt-get install redis-server): %v", err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	s := &redisServer{t: t, bin: bin, dir: t.TempDir(), addr: addr}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *redisServer) start() {
	s.t.Helper()
	_, port, _ := net.SplitHostPort(s.addr)
	s.cmd = exec.Command(s.bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"), "--daemonize", "no")
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("starting redis-server: %v", err)
	}
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1, DisableIdentity: true})
	defer c.Close()
	waitFor(s.t, "redis-server to answer on "+s.addr, 10*time.Second, func() error {
		return c.Ping(context.Background()).Err()
	})
}

// stop kills the server (its data is gone: it keeps nothing on disk).
func (s *redisServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT) // in case it is paused
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

func (s *redisServer) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v to redis-server: %v", sig, err)
	}
}

// TestRedisOutageRestart: Redis dies and comes back empty. Meanwhile
// operations fail fast with ErrUnavailable and Health says so; then the
// node's lease and sessions come back by themselves and Lookup shows them.
func TestRedisOutageRestart(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	k := newTracker()
	r := openNode(t, srv.addr, "herald:", registry.NodeInfo{ID: "n1"}, k.options)
	a, b := session("n1", "u", "a", 1), session("n1", "u", "b", 2)
	k.claim(t, r, a)
	k.claim(t, r, b)
	if err := wantLookup(t, r, "u", "a@n1-1 b@n1-2"); err != nil {
		t.Fatal(err)
	}

	srv.stop()
	start := time.Now()
	_, _, err := r.Claim(t.Context(), session("n1", "u", "c", 3), false)
	if !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Claim with Redis down: %v; want ErrUnavailable", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Claim with Redis down took %v; want it to fail fast", d)
	}
	for range 3 { // every call fails fast, not only the first
		start = time.Now()
		if _, err := r.Lookup(t.Context(), "app", "u"); !errors.Is(err, registry.ErrUnavailable) || time.Since(start) > time.Second {
			t.Fatalf("Lookup with Redis down: %v after %v; want ErrUnavailable at once", err, time.Since(start))
		}
	}
	if _, err := r.Nodes(t.Context()); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Nodes with Redis down: %v; want ErrUnavailable", err)
	}
	if err := r.Health(); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Health with Redis down: %v; want ErrUnavailable", err)
	}
	// The connection of b closes during the outage.
	if err := k.release(t, r, b); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Release with Redis down: %v; want ErrUnavailable", err)
	}
	if n := r.Count(); n != 1 {
		t.Fatalf("Count %d; want 1 (a)", n)
	}
	waitFor(t, "Health to report the lost lease", 5*testLease, func() error {
		if err := r.Health(); !errors.Is(err, registry.ErrLeaseLost) {
			return fmt.Errorf("Health: %v", err)
		}
		return nil
	})

	srv.start() // empty
	waitFor(t, "the registry to recover", 10*time.Second, func() error {
		if err := r.Health(); err != nil {
			return err
		}
		return wantLookup(t, r, "u", "a@n1-1")
	})
	nodes, err := r.Nodes(t.Context())
	if err != nil || len(nodes) != 1 || nodes[0].ID != "n1" || nodes[0].Sessions != 1 {
		t.Fatalf("Nodes after the restart: %+v, %v", nodes, err)
	}
	c := session("n1", "u", "c", 4)
	k.claim(t, r, c)
	if err := wantLookup(t, r, "u", "a@n1-1 c@n1-4"); err != nil {
		t.Fatal(err)
	}
	if lost := k.lostList(); len(lost) != 0 {
		t.Fatalf("sessions reported lost: %v", lost)
	}
}

// TestRedisOutagePause: Redis stops answering (paused) for longer than the
// lease, and comes back with its data. A release asked meanwhile is done
// when it is back, and so is the undoing of a claim that timed out; the
// lease, expired meanwhile, is taken again and the other sessions claimed
// again.
func TestRedisOutagePause(t *testing.T) {
	t.Parallel()
	srv := startRedisServer(t)
	k := newTracker()
	r := openNode(t, srv.addr, "herald:", registry.NodeInfo{ID: "n1"}, k.options)
	a, b := session("n1", "u", "a", 1), session("n1", "u", "b", 2)
	k.claim(t, r, a)
	k.claim(t, r, b)

	srv.signal(syscall.SIGSTOP)
	paused := time.Now()
	if err := k.release(t, r, b); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Release with Redis paused: %v; want ErrUnavailable", err)
	}
	waitFor(t, "Health to report the outage", 5*time.Second, func() error {
		if err := r.Health(); !errors.Is(err, registry.ErrUnavailable) {
			return fmt.Errorf("Health: %v", err)
		}
		return nil
	})
	// A claim whose caller stops waiting: its command is in Redis's socket
	// buffer and runs when Redis does, but the caller took it as failed
	// (and will not release it), so the registry must undo it.
	short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := r.Claim(short, session("n1", "u", "c", 3), false); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Claim with Redis paused: %v; want the deadline or ErrUnavailable", err)
	}
	// Stay paused past the lease: the node sees it when its last renewal
	// is older than the lease, and Redis applies the expiry when it runs
	// again.
	waitFor(t, "the lease to have expired", 5*testLease, func() error {
		if err := r.Health(); !errors.Is(err, registry.ErrLeaseLost) {
			return fmt.Errorf("Health after %v: %v", time.Since(paused).Round(time.Millisecond), err)
		}
		return nil
	})
	srv.signal(syscall.SIGCONT)
	waitFor(t, "the registry to recover", 10*time.Second, func() error {
		if err := r.Health(); err != nil {
			return err
		}
		return wantLookup(t, r, "u", "a@n1-1")
	})
}

// TestRedisLeaseLost: a node that cannot renew its lease (paused) loses
// its sessions to lease expiry: another node removes them and a device of
// it logs in elsewhere in refuse mode. The paused node's Health says it
// lost its lease, and its claims fail. When it renews again it claims its
// sessions again, except the one now held elsewhere, reported to Lost.
func TestRedisLeaseLost(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	prefix := testPrefix(t, addr)
	var gate sync.RWMutex // held for writing: n1's renewals wait
	k := newTracker()
	opts := registry.RedisOptions{Addr: addr, Prefix: prefix, Node: registry.NodeInfo{ID: "n1"}, Lease: testLease, Renew: testRenew, Logger: quiet()}
	k.options(&opts)
	n1, err := registry.OpenRedisWithHook(context.Background(), opts, func() { gate.RLock(); gate.RUnlock() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n1.Close() })
	n2 := openNode(t, addr, prefix, registry.NodeInfo{ID: "n2"})

	a, b := session("n1", "u", "a", 1), session("n1", "u", "b", 2)
	k.claim(t, n1, a)
	k.claim(t, n1, b)
	gate.Lock()
	paused := true
	defer func() {
		if paused {
			gate.Unlock()
		}
	}()
	waitFor(t, "n1's sessions to expire", 5*testLease, func() error { return wantLookup(t, n2, "u", "") })
	// n2 notices the dead lease and removes n1's sessions from Redis.
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer c.Close()
	waitFor(t, "n2 to remove n1's sessions", 5*testLease, func() error {
		if n, err := c.Exists(t.Context(), prefix+"u:app u", prefix+"s:n1 "+n1.Incarnation()).Result(); err != nil || n != 0 {
			return fmt.Errorf("%d keys left, %v", n, err)
		}
		return nil
	})
	if err := n1.Health(); !errors.Is(err, registry.ErrLeaseLost) || !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Health of the paused node: %v; want ErrLeaseLost and ErrUnavailable", err)
	}
	if _, _, err := n1.Claim(t.Context(), session("n1", "v", "x", 3), false); !errors.Is(err, registry.ErrLeaseLost) {
		t.Fatalf("Claim on a node without its lease: %v; want ErrLeaseLost", err)
	}
	a2 := session("n2", "u", "a", 1)
	if _, had, err := n2.Claim(t.Context(), a2, false); err != nil || had {
		t.Fatalf("refusing claim of a dead node's device: had %v, %v; want it to win", had, err)
	}

	gate.Unlock()
	paused = false
	waitFor(t, "n1 to claim its sessions again", 5*testLease, func() error {
		if err := n1.Health(); err != nil {
			return err
		}
		return wantLookup(t, n2, "u", "a@n2-1 b@n1-2")
	})
	if lost := k.lostList(); !slices.Equal(lost, []string{"n1-1 lost to n2-1"}) {
		t.Fatalf("Lost reported %q; want n1-1 lost to n2-1", lost)
	}
}

// TestRedisRestartSameID: a node that crashed and starts again with the
// same node id (a new incarnation) removes the old incarnation's sessions
// at once, without waiting for the lease.
func TestRedisRestartSameID(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	prefix := testPrefix(t, addr)
	old := openNode(t, addr, prefix, registry.NodeInfo{ID: "n1"}, func(o *registry.RedisOptions) { o.Lease = time.Hour; o.Renew = time.Minute })
	oldInc := old.Incarnation()
	for i := range 3 {
		if _, _, err := old.Claim(t.Context(), session("n1", "u", "d"+strconv.Itoa(i), uint64(i+1)), false); err != nil {
			t.Fatal(err)
		}
	}
	old.Kill()
	n := openNode(t, addr, prefix, registry.NodeInfo{ID: "n1"}, func(o *registry.RedisOptions) { o.Lease = time.Hour; o.Renew = time.Minute })
	if err := wantLookup(t, n, "u", ""); err != nil {
		t.Fatalf("at once after the restart: %v", err)
	}
	if _, had, err := n.Claim(t.Context(), session("n1", "u", "d0", 1), false); err != nil || had {
		t.Fatalf("claim of the old incarnation's device: had %v, %v", had, err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer c.Close()
	if n, err := c.Exists(t.Context(), prefix+"s:n1 "+oldInc).Result(); err != nil || n != 0 {
		t.Fatalf("the old incarnation's session set: exists %d, %v", n, err)
	}
}

// TestRedisFencing: a second process with a live node's id takes the id
// over; the first one is fenced off (Health, claims fail) until the
// second is gone, and then takes its lease and sessions back.
func TestRedisFencing(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	prefix := testPrefix(t, addr)
	k := newTracker()
	first := openNode(t, addr, prefix, registry.NodeInfo{ID: "n1"}, k.options)
	k.claim(t, first, session("n1", "u", "a", 1))
	second := openNode(t, addr, prefix, registry.NodeInfo{ID: "n1"})
	waitFor(t, "the first process to be fenced off", 5*testLease, func() error {
		if err := first.Health(); !errors.Is(err, registry.ErrLeaseLost) {
			return fmt.Errorf("Health: %v", err)
		}
		return nil
	})
	if _, _, err := first.Claim(t.Context(), session("n1", "u", "b", 2), false); !errors.Is(err, registry.ErrUnavailable) {
		t.Fatalf("Claim of a fenced-off process: %v; want ErrUnavailable", err)
	}
	if err := wantLookup(t, second, "u", ""); err != nil {
		t.Fatal(err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first process to come back", 5*testLease, func() error {
		if err := first.Health(); err != nil {
			return err
		}
		return wantLookup(t, first, "u", "a@n1-1")
	})
}

// TestRedisKeyLayout checks the keys docs/architecture.md describes, and
// that Close leaves none behind.
func TestRedisKeyLayout(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	prefix := testPrefix(t, addr)
	r := openNode(t, addr, prefix, registry.NodeInfo{ID: "n1", WSURL: "ws://n1/ws"})
	inc := r.Incarnation()
	if _, _, err := r.Claim(t.Context(), session("n1", "alice", "phone", 7), false); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer c.Close()
	ctx := t.Context()
	v, err := c.HGet(ctx, prefix+"u:app alice", "phone").Result()
	if err != nil || !strings.Contains(v, `"id":"n1-7"`) || !strings.Contains(v, `"inc":"`+inc+`"`) {
		t.Fatalf("session hash field: %q, %v", v, err)
	}
	lease, err := c.HGetAll(ctx, prefix+"n:n1").Result()
	if err != nil || lease["inc"] != inc || !strings.Contains(lease["info"], `"ws_url":"ws://n1/ws"`) {
		t.Fatalf("lease: %v, %v", lease, err)
	}
	if ttl, err := c.PTTL(ctx, prefix+"n:n1").Result(); err != nil || ttl <= 0 || ttl > testLease {
		t.Fatalf("lease TTL %v, %v; want at most %v", ttl, err, testLease)
	}
	if got, err := c.HGet(ctx, prefix+"nodes", "n1").Result(); err != nil || got != inc {
		t.Fatalf("nodes hash: %q, %v", got, err)
	}
	if m, err := c.SMembers(ctx, prefix+"s:n1 "+inc).Result(); err != nil || !slices.Equal(m, []string{"app alice phone"}) {
		t.Fatalf("session set: %q, %v", m, err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if keys, err := c.Keys(ctx, prefix+"*").Result(); err != nil || len(keys) != 0 {
		t.Fatalf("keys after Close: %q, %v", keys, err)
	}
}

// TestRedisDeadNodeCleanup: a dead node with more sessions than one
// cleanup batch leaves nothing behind once another node has noticed.
func TestRedisDeadNodeCleanup(t *testing.T) {
	t.Parallel()
	addr := redisAddr(t)
	prefix := testPrefix(t, addr)
	dead := openNode(t, addr, prefix, registry.NodeInfo{ID: "dead"})
	const n = 1300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := session("dead", "u"+strconv.Itoa(i%400), "d"+strconv.Itoa(i), uint64(i+1))
			if _, _, err := dead.Claim(context.Background(), s, false); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	dead.Kill()
	live := openNode(t, addr, prefix, registry.NodeInfo{ID: "live"})
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer c.Close()
	waitFor(t, "the dead node's keys to go", 5*testLease+5*time.Second, func() error {
		keys, err := c.Keys(t.Context(), prefix+"*").Result()
		if err != nil {
			return err
		}
		slices.Sort(keys)
		if !slices.Equal(keys, []string{prefix + "n:live", prefix + "nodes"}) {
			if len(keys) > 5 {
				keys = append(keys[:5], "…")
			}
			return fmt.Errorf("keys %q", keys)
		}
		return nil
	})
	if err := wantLookup(t, live, "u7", ""); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkRedisClaim measures claims against the shared Redis (each a
// new device, one script): one at a time (the latency of a claim) and
// from 64 goroutines at once, as in a reconnect storm. It reports
// claims/s.
func BenchmarkRedisClaim(b *testing.B) {
	addr := redisAddr(b)
	prefix := testPrefix(b, addr)
	r := openNode(b, addr, prefix, registry.NodeInfo{ID: "bench"})
	var seq atomic.Uint64
	claim := func(b *testing.B) bool {
		i := seq.Add(1)
		s := session("bench", "u"+strconv.FormatUint(i, 10), "d", i)
		if _, _, err := r.Claim(context.Background(), s, false); err != nil {
			b.Error(err)
			return false
		}
		return true
	}
	b.Run("serial", func(b *testing.B) {
		start := time.Now()
		for range b.N {
			if !claim(b) {
				return
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "claims/s")
	})
	b.Run("parallel64", func(b *testing.B) {
		b.SetParallelism(32) // 64 claimers on 2 cores
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if !claim(b) {
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "claims/s")
	})
}

// BenchmarkRedisStorm claims 19,000 sessions at once (one goroutine each,
// as 19,000 connections authenticating together): ns/op is the time of
// one storm, and claims/s the rate over all of them.
func BenchmarkRedisStorm(b *testing.B) {
	addr := redisAddr(b)
	const conns = 19000
	var total time.Duration
	for range b.N {
		b.StopTimer()
		prefix := testPrefix(b, addr)
		r, err := registry.NewRedis(context.Background(), registry.RedisOptions{Addr: addr, Prefix: prefix,
			Node: registry.NodeInfo{ID: "storm"}, Logger: quiet()})
		if err != nil {
			b.Fatal(err)
		}
		sessions := make([]*registry.Session, conns)
		for i := range sessions {
			sessions[i] = session("storm", "u"+strconv.Itoa(i), "d", uint64(i+1))
		}
		var wg sync.WaitGroup
		b.StartTimer()
		start := time.Now()
		for _, s := range sessions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, _, err := r.Claim(context.Background(), s, false); err != nil {
					b.Error(err)
				}
			}()
		}
		wg.Wait()
		total += time.Since(start)
		b.StopTimer()
		if err := r.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(conns*b.N)/total.Seconds(), "claims/s")
}
