package registry_test

import (
	"strconv"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/registry/registrytest"
)

func TestMemoryConformance(t *testing.T) {
	registrytest.Run(t, registrytest.Config{
		NewCluster: func(t *testing.T) registrytest.NewNode {
			return func(node registry.NodeInfo, load func() registry.Load) registry.Registry {
				return registry.NewMemory(registry.MemoryOptions{Node: node, Load: load})
			}
		},
	})
}

// TestMemoryKeepsPointer checks the memory budget: the registry keeps the
// caller's session, not a copy, and a Session is no bigger than it was on
// one node (128 bytes: its id is computed, not stored).
func TestMemoryKeepsPointer(t *testing.T) {
	if n := unsafe.Sizeof(registry.Session{}); n > 128 {
		t.Fatalf("Session is %d bytes; it was 128", n)
	}
	m := registry.NewMemory(registry.MemoryOptions{})
	a := &registry.Session{App: "app", User: "u", Device: "d", Node: "n", ConnID: 1}
	if _, _, err := m.Claim(t.Context(), a, false); err != nil {
		t.Fatal(err)
	}
	// Release is by identity: an equal copy is another session.
	cp := *a
	if err := m.Release(t.Context(), &cp); err != nil {
		t.Fatal(err)
	}
	if m.Count() != 1 {
		t.Fatalf("a copy released the session: Count %d", m.Count())
	}
	if err := m.Release(t.Context(), a); err != nil || m.Count() != 0 {
		t.Fatalf("Release: %v, Count %d", err, m.Count())
	}
	if got := a.ID(); got != "n-1" {
		t.Fatalf("ID() = %q; want n-1", got)
	}
}

// BenchmarkMemoryClaimRelease measures the single-node registry's cost per
// session: a claim and its release.
func BenchmarkMemoryClaimRelease(b *testing.B) {
	m := registry.NewMemory(registry.MemoryOptions{})
	ctx := b.Context()
	b.ReportAllocs()
	var workers atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		s := &registry.Session{App: "app", User: "u" + strconv.FormatInt(workers.Add(1), 10), Device: "d", Node: "n"}
		for pb.Next() {
			if _, _, err := m.Claim(ctx, s, true); err != nil {
				b.Fatal(err)
			}
			if err := m.Release(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
	})
}
