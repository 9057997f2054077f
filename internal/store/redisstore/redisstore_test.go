package redisstore_test

import (
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/redisstore"
	"github.com/herald-push/herald/internal/store/storetest"
)

// TestConformance runs the store suite against the shared Redis, each
// store under a prefix of its own; a reopen is a new client on the same
// prefix, as another node would be.
func TestConformance(t *testing.T) {
	addr := sharedRedis(t)
	storetest.Run(t,
		func(t *testing.T, now func() time.Time) store.Store {
			return open(t, addr, newPrefix(t, addr), now)
		},
		storetest.WithReopen(func(t *testing.T, s store.Store, now func() time.Time) store.Store {
			prefix := s.(*redisstore.Store).Prefix()
			if err := s.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			return open(t, addr, prefix, now)
		}),
		storetest.WithDataLoss(func(t *testing.T, s store.Store, stream string) {
			deleteStream(t, addr, s.(*redisstore.Store), stream)
		}))
}
