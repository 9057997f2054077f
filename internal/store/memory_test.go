package store_test

import (
	"testing"
	"time"

	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/store/storetest"
)

func TestMemory(t *testing.T) {
	storetest.Run(t, func(t *testing.T, now func() time.Time) store.Store {
		return store.NewMemory(store.MemoryOptions{Now: now})
	})
}
