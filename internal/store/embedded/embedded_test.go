package embedded_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/embedded"
	"github.com/herald-push/herald/internal/store/storetest"
)

func open(t *testing.T, dir string, opts embedded.Options) *embedded.DB {
	t.Helper()
	db, err := embedded.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return db
}

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		sync embedded.SyncPolicy
	}{
		{"SyncEvery", embedded.SyncEvery},
		{"SyncInterval", embedded.SyncInterval(5 * time.Millisecond)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			storetest.Run(t,
				func(t *testing.T, now func() time.Time) store.Store {
					return open(t, filepath.Join(t.TempDir(), "data"), embedded.Options{Now: now, Sync: tc.sync})
				},
				storetest.WithReopen(func(t *testing.T, s store.Store, now func() time.Time) store.Store {
					db := s.(*embedded.DB)
					if err := db.Close(); err != nil {
						t.Fatalf("Close: %v", err)
					}
					return open(t, db.Dir(), embedded.Options{Now: now, Sync: tc.sync})
				}))
		})
	}
}
