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
