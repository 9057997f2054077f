package hub

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-push/herald/protocol"
)

// countConn takes frames and only counts them. It is padded so that
// counters of neighbouring connections do not share a cache line.
type countConn struct {
	id uint64
	n  atomic.Int64
	_  [48]byte
}

func (c *countConn) ID() uint64 { return c.id }

func (c *countConn) Send(frames ...*protocol.Encoded) error {
	c.n.Add(int64(len(frames)))
	return nil
}

func benchHub(b *testing.B, cfg Config) *Hub {
	b.Helper()
	h := New(cfg)
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := h.Shutdown(ctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
	})
	return h
}

// waitCounted waits until the conns have counted want frames in all.
func waitCounted(b *testing.B, conns []*countConn, want int64) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got int64
		for _, c := range conns {
			got += c.n.Load()
		}
		if got == want {
			return
		}
		if got > want {
			b.Fatalf("conns counted %d deliveries, want %d", got, want)
		}
		if time.Now().After(deadline) {
			b.Fatalf("conns counted %d deliveries of %d after 60 s", got, want)
		}
		runtime.Gosched()
	}
}

// waitDelivered waits until the hub has handed out want frames. It is one
// atomic load, cheap enough to poll between publishes.
func waitDelivered(b *testing.B, h *Hub, want uint64) {
	if h.delivered.Load() >= want {
		return
	}
	deadline := time.Now().Add(60 * time.Second)
	for h.delivered.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("delivered %d of %d after 60 s", h.delivered.Load(), want)
		}
		runtime.Gosched()
	}
}

// BenchmarkPublishFanout measures Publish to a topic with many local
// subscribers, up to the last delivery. With inflight=1 each message reaches
// every subscriber before the next is published: the unbatched cost. With
// inflight=1024 up to 1024 messages may be on their way, as on a busy topic,
// so publishes that arrive during a pass are batched into the next one.
// ns/op is per Publish; ns/delivery divides by subscribers too.
func BenchmarkPublishFanout(b *testing.B) {
	payload := make([]byte, 100)
	for _, subs := range []int{100, 1_000, 10_000} {
		for _, inflight := range []int{1, 1024} {
			b.Run(fmt.Sprintf("subs=%d/payload=100B/inflight=%d", subs, inflight), func(b *testing.B) {
				h := benchHub(b, Config{})
				conns := make([]*countConn, subs)
				for i := range conns {
					conns[i] = &countConn{id: uint64(i + 1)}
					h.Subscribe("app", "topic", conns[i])
				}
				e := protocol.Encode(&protocol.Frame{Type: protocol.TypePush, Stream: "t:topic", MsgID: "m", Payload: payload})
				e.Framed()
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for i := range b.N {
					if i >= inflight {
						waitDelivered(b, h, uint64(i-inflight+1)*uint64(subs))
					}
					h.Publish("app", "topic", e)
				}
				waitCounted(b, conns, int64(b.N)*int64(subs))
				elapsed := time.Since(start)
				b.StopTimer()
				st := h.Stats()
				if st.Dropped != 0 {
					b.Fatalf("dropped %d", st.Dropped)
				}
				deliveries := float64(b.N) * float64(subs)
				b.ReportMetric(float64(elapsed.Nanoseconds())/deliveries, "ns/delivery")
				if st.Passes > 0 {
					b.ReportMetric(float64(b.N)*numParts/float64(st.Passes), "msgs/pass")
				}
			})
		}
	}
}

// BenchmarkPushUser measures PushUser, which writes synchronously to every
// connection of one user.
func BenchmarkPushUser(b *testing.B) {
	e := protocol.Encode(&protocol.Frame{Type: protocol.TypePush, Stream: "u:user", MsgID: "m", Payload: make([]byte, 100)})
	for _, devices := range []int{1, 4} {
		b.Run(fmt.Sprintf("devices=%d", devices), func(b *testing.B) {
			h := benchHub(b, Config{})
			// Many users, so that the lookup is not in a one-entry map.
			for u := range 10_000 {
				for d := range devices {
					h.AddUser("app", fmt.Sprintf("user%d", u), &countConn{id: uint64(u*devices + d + 1)})
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if n := h.PushUser("app", "user"+itoa(i%10_000), e); n != devices {
					b.Fatalf("PushUser = %d, want %d", n, devices)
				}
			}
		})
	}
	b.Run("devices=1/parallel", func(b *testing.B) {
		h := benchHub(b, Config{})
		const users = 10_000
		names := make([]string, users)
		for u := range names {
			names[u] = fmt.Sprintf("user%d", u)
			h.AddUser("app", names[u], &countConn{id: uint64(u + 1)})
		}
		var next atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1) * 7919)
			for pb.Next() {
				i++
				if h.PushUser("app", names[i%users], e) != 1 {
					b.Error("PushUser missed")
					return
				}
			}
		})
	})
}

// itoa avoids fmt in the timed loop; the user key is still built per call,
// as the API does.
func itoa(i int) string {
	var buf [20]byte
	n := len(buf)
	for {
		n--
		buf[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			break
		}
	}
	return string(buf[n:])
}
