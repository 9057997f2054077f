package api

import (
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	b := newBucket(2, 4, now)
	if w := b.take(4, now); w != 0 {
		t.Fatalf("a full burst: wait %v", w)
	}
	if w := b.take(1, now); w != 500*time.Millisecond {
		t.Fatalf("empty at 2/s: wait %v, want 500ms", w)
	}
	if w := b.take(1, now.Add(500*time.Millisecond)); w != 0 {
		t.Fatalf("after a refill: wait %v", w)
	}
	if w := b.take(5, now); w != -1 {
		t.Fatalf("over the burst: %v, want -1", w)
	}
	if w := b.take(3, now.Add(time.Hour)); w != 0 {
		t.Fatalf("after an hour: wait %v", w)
	}
	var none *tokenBucket
	if newBucket(0, 5, now) != nil || none.take(1000, now) != 0 {
		t.Fatal("a zero rate must be unlimited")
	}
	if got := retryAfter(1100 * time.Millisecond); got != 2 {
		t.Fatalf("retryAfter(1.1s) = %d, want 2 (rounded up)", got)
	}
}

// BenchmarkQuotaChecks is what a push pays for its app's quotas when they
// are configured and never hit: one API token and one publish token.
func BenchmarkQuotaChecks(b *testing.B) {
	a := New(Config{Apps: []string{"a"}, Limits: map[string]Limits{"a": {APIRate: 1e9, APIBurst: 1e9, PublishRate: 1e9, PublishBurst: 1e9}}}, nil, nil)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if a.allowRequest("a") != nil || a.allowPublish("a", 1) != nil {
				b.Fatal("limited")
			}
		}
	})
}
