package gateway

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// TestStartStopNoHang starts a gateway with both listeners and several
// event loops and shuts it down at once, many times. nbio clears a poller's
// stop flag when its goroutine starts, so a Shutdown that runs before every
// event loop goroutine has started used to hang for ever in the engine's
// Stop; each Shutdown here must return within its deadline.
func TestStartStopNoHang(t *testing.T) {
	const rounds = 200
	deadline := time.Now().Add(8 * time.Second)
	i := 0
	for ; i < rounds && time.Now().Before(deadline); i++ {
		g, err := New(Config{WSAddr: "127.0.0.1:0", TCPAddr: "127.0.0.1:0", Pollers: 1 + i%6,
			Logger: slog.New(slog.DiscardHandler)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Start(); err != nil {
			t.Fatalf("round %d: start: %v", i, err)
		}
		done := make(chan error, 1)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		go func() { done <- g.Shutdown(ctx, "") }()
		select {
		case err := <-done:
			cancel()
			if err != nil {
				t.Fatalf("round %d: shutdown: %v", i, err)
			}
		case <-time.After(3 * time.Second):
			cancel()
			// The engine's Stop does not watch ctx: a hung Stop never
			// returns, and its goroutines are left behind.
			t.Fatalf("round %d: shutdown hung (an event loop started after Stop)", i)
		}
	}
	t.Logf("%d rounds", i)
}
