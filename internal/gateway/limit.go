package gateway

import (
	"fmt"

	"github.com/herald-push/herald/protocol"
)

// bucket is a token bucket in two 32-bit fields: tokens in thousandths,
// and the unix millisecond (wrapping) it was last filled at. A connection
// that reads nothing for longer than the heartbeat plus grace is closed, so
// the wrap of the clock (every 49 days) never makes an old fill look
// recent.
type bucket struct {
	milli uint32 // tokens x 1000
	last  uint32 // unix milliseconds, truncated
}

// Rate is a bound on events per second: Burst at once, then PerSecond.
type Rate struct {
	PerSecond int // tokens added per second
	Burst     int // bucket size, at most MaxBurst
}

// MaxBurst is the largest Rate.Burst (the bucket counts thousandths in 32 bits).
const MaxBurst = 4_000_000

func (r Rate) valid() bool { return r.PerSecond > 0 && r.Burst > 0 && r.Burst <= MaxBurst }

// fill makes b full at now.
func (b *bucket) fill(r Rate, nowMilli int64) {
	b.milli, b.last = uint32(r.Burst)*1000, uint32(nowMilli)
}

// take takes one token at now and reports whether there was one.
func (b *bucket) take(r Rate, nowMilli int64) bool {
	now := uint32(nowMilli)
	t := uint64(b.milli) + uint64(now-b.last)*uint64(r.PerSecond) // PerSecond tokens per second = per ms in thousandths
	t = min(t, uint64(r.Burst)*1000)
	b.last = now
	if t < 1000 {
		b.milli = uint32(t)
		return false
	}
	b.milli = uint32(t - 1000)
	return true
}

// allowFrame counts one frame (or WebSocket control frame) from c against
// its frame rate. It runs on c's event loop goroutine.
func (g *Gateway) allowFrame(c *Conn, nowMilli int64) bool {
	return c.frames.take(g.rates.Load().frame, nowMilli)
}

// rates are the per-connection rates in force.
type rates struct{ frame, subscribe Rate }

// SetRates replaces the per-connection frame and subscribe rates, for
// every connection, open ones included (a bucket keeps its tokens, up to
// the new burst). It is safe to call while the gateway runs.
func (g *Gateway) SetRates(frame, subscribe Rate) error {
	if !frame.valid() || !subscribe.valid() {
		return fmt.Errorf("gateway: rates %+v and %+v must be positive, with bursts of at most %d", frame, subscribe, MaxBurst)
	}
	g.rates.Store(&rates{frame: frame, subscribe: subscribe})
	return nil
}

// rateLimited closes c for going over a bound: ERROR rate limited, then
// DISCONNECT policy violation.
func (g *Gateway) rateLimited(c *Conn, what string) {
	g.stats.rateLimited.Add(1)
	var text string
	r := g.rates.Load()
	switch what {
	case "subscriptions":
		text = fmt.Sprintf("more than %d SUBSCRIBE and UNSUBSCRIBE requests at once, or %d per second", r.subscribe.Burst, r.subscribe.PerSecond)
	default:
		text = fmt.Sprintf("more than %d frames at once, or %d per second", r.frame.Burst, r.frame.PerSecond)
	}
	g.log.Info("rate limited", "conn_id", c.id, "remote", c.RemoteAddr(), "transport", c.transport.String(), "limit", what)
	c.Fail(&protocol.Error{Code: protocol.CodeRateLimited, Text: text}, protocol.NewDisconnect(protocol.DisconnectPolicyViolation))
}
