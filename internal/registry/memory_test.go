package registry

import (
	"sync"
	"testing"
)

func TestClaimReplaceRefuse(t *testing.T) {
	m := NewMemory()
	a := &Session{App: "app", User: "u", Device: "d", ConnID: 1}
	if _, had, ok := m.Claim(a, true); had || !ok {
		t.Fatalf("first claim: had=%v ok=%v", had, ok)
	}
	b := &Session{App: "app", User: "u", Device: "d", ConnID: 2}
	if prev, had, ok := m.Claim(b, false); !had || ok || prev.ConnID != 1 {
		t.Fatalf("refuse: prev=%v had=%v ok=%v", prev, had, ok)
	}
	if prev, had, ok := m.Claim(b, true); !had || !ok || prev.ConnID != 1 {
		t.Fatalf("replace: prev=%v had=%v ok=%v", prev, had, ok)
	}
	m.Release(a) // stale: must not remove b
	if got := m.Lookup("app", "u"); len(got) != 1 || got[0].ConnID != 2 {
		t.Fatalf("after stale release: %v", got)
	}
	other := &Session{App: "app", User: "u", Device: "e", ConnID: 3}
	m.Claim(other, true)
	if got := m.Lookup("app", "u"); len(got) != 2 || got[0].Device != "d" || got[1].Device != "e" {
		t.Fatalf("two devices: %v", got)
	}
	if m.Count() != 2 {
		t.Fatalf("count = %d", m.Count())
	}
	m.Release(b)
	m.Release(other)
	if got := m.Lookup("app", "u"); len(got) != 0 || m.Count() != 0 {
		t.Fatalf("after release: %v count %d", got, m.Count())
	}
	if got := m.Lookup("other-app", "u"); len(got) != 0 {
		t.Fatalf("app isolation: %v", got)
	}
}

func TestClaimConcurrentOneWinner(t *testing.T) {
	m := NewMemory()
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, ok := m.Claim(&Session{App: "a", User: "u", Device: "d", ConnID: uint64(i)}, false); ok {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 || m.Count() != 1 {
		t.Fatalf("wins = %d, count = %d", wins, m.Count())
	}
}
