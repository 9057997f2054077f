package redisswitches_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/internal/switches/redisswitches"
	"github.com/herald-push/herald/internal/switches/switchestest"
	"github.com/herald-push/herald/internal/testsvc"
)

// TestStore runs the suite against the test Redis (it fails, not skips,
// when CI is set and Redis is missing); each subtest has a hash of its
// own, shared by the stores it opens (other nodes).
func TestStore(t *testing.T) {
	addr := testsvc.Redis(t)
	var keys sync.Map // subtest name -> its hash
	switchestest.Run(t, func(t *testing.T) switches.Store {
		k, loaded := keys.LoadOrStore(t.Name(), testsvc.Prefix(t)+":switches")
		if !loaded {
			t.Cleanup(func() {
				c := redis.NewClient(&redis.Options{Addr: addr})
				defer c.Close()
				_ = c.Del(context.Background(), k.(string)).Err()
			})
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := redisswitches.Open(ctx, redisswitches.Options{Addr: addr, Key: k.(string)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	})
}
