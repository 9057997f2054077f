package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/store/redisstore"
)

// service returns the address of a shared service the test needs, read
// from env (default def), after checking that it accepts connections.
// When it does not, the test fails if CI is set and is skipped otherwise,
// with one line saying what is missing.
func service(tb testing.TB, name, env, def string) string {
	tb.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		addr = def
	}
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		_ = c.Close()
		return addr
	}
	if os.Getenv("CI") != "" {
		tb.Fatalf("%s is not reachable at %s (set %s): %v", name, addr, env, err)
	}
	tb.Skipf("%s is not reachable at %s (set %s): %v", name, addr, env, err)
	return ""
}

// sharedRedis returns the address of the shared Redis (HERALD_TEST_REDIS).
func sharedRedis(tb testing.TB) string {
	return service(tb, "redis", "HERALD_TEST_REDIS", "127.0.0.1:6379")
}

// newPrefix returns a key prefix of its own for one test, and deletes
// every key under it when the test ends.
func newPrefix(tb testing.TB, addr string) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "herald-test:" + strings.NewReplacer("/", "-", " ", "-").Replace(tb.Name()) + ":" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() { deletePrefix(tb, addr, prefix) })
	return prefix
}

// deletePrefix deletes every key under prefix (which has no glob
// characters but those newPrefix lets through from the test's name).
func deletePrefix(tb testing.TB, addr, prefix string) {
	rdb := newClient(addr)
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pattern := globEscaper.Replace(prefix) + "*"
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	var batch []string
	flush := func() {
		if len(batch) > 0 {
			if err := rdb.Unlink(ctx, batch...).Err(); err != nil {
				tb.Errorf("cleaning up %s: %v", prefix, err)
			}
			batch = batch[:0]
		}
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			flush()
		}
	}
	flush()
	if err := iter.Err(); err != nil {
		tb.Errorf("cleaning up %s: %v", prefix, err)
	}
}

var globEscaper = strings.NewReplacer(`\`, `\\`, "*", `\*`, "?", `\?`, "[", `\[`, "]", `\]`)

// open opens a store on addr under prefix and closes it when the test
// ends.
func open(tb testing.TB, addr, prefix string, now func() time.Time) *redisstore.Store {
	tb.Helper()
	s, err := redisstore.Open(tb.Context(), redisstore.Options{Addr: addr, Prefix: prefix, Now: now})
	if err != nil {
		tb.Fatalf("Open(%s, %q): %v", addr, prefix, err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// deleteKeys deletes keys on addr behind the stores' back.
func deleteKeys(tb testing.TB, addr string, keys ...string) {
	tb.Helper()
	rdb := newClient(addr)
	defer rdb.Close()
	if err := rdb.Del(tb.Context(), keys...).Err(); err != nil {
		tb.Fatalf("DEL %v: %v", keys, err)
	}
}

// deleteStream deletes every key of stream in s.
func deleteStream(tb testing.TB, addr string, s *redisstore.Store, stream string) {
	tb.Helper()
	k := s.StreamKeys(stream)
	deleteKeys(tb, addr, k[:]...)
}

// newClient returns a plain client of the test's own, to look at or
// damage what the stores wrote.
func newClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Protocol: 2})
}
