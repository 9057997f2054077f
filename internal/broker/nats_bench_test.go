package broker_test

import (
	"context"
	"encoding/binary"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/broker"
	"github.com/herald-push/herald/internal/testsvc"
)

// BenchmarkNATSLatency publishes one message at a time from one node to
// another through the shared nats-server and reports the one-way latency
// (publish to handler call) percentiles.
//
//	go test -run XXX -bench NATSLatency -benchtime 20000x ./internal/broker/
func BenchmarkNATSLatency(b *testing.B) {
	url := "nats://" + testsvc.NATS(b)
	prefix := testsvc.Prefix(b)
	a := natsNode(b, url, prefix, 0, broker.Options{})
	r := natsNode(b, url, prefix, 1, broker.Options{})
	s := broker.UserSubject("app", "latency")
	start := time.Now()
	got := make(chan time.Duration, 1)
	if _, err := r.Subscribe(b.Context(), s, func(d []byte) {
		got <- time.Since(start) - time.Duration(binary.BigEndian.Uint64(d))
	}); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	msg := make([]byte, 200)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		binary.BigEndian.PutUint64(msg, uint64(time.Since(start)))
		if err := a.Publish(ctx, s, msg); err != nil {
			b.Fatal(err)
		}
		select {
		case d := <-got:
			lat = append(lat, d)
		case <-time.After(10 * time.Second):
			b.Fatal("message lost")
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkNATSThroughput publishes b.N messages of 200 bytes from one
// node to another as fast as Publish goes and waits until all arrived (or
// were dropped, reported as drops).
//
//	go test -run XXX -bench NATSThroughput -benchtime 1000000x ./internal/broker/
func BenchmarkNATSThroughput(b *testing.B) {
	url := "nats://" + testsvc.NATS(b)
	prefix := testsvc.Prefix(b)
	a := natsNode(b, url, prefix, 0, broker.Options{})
	r := natsNode(b, url, prefix, 1, broker.Options{})
	s := broker.TopicSubject("app", "throughput")
	var n atomic.Int64
	if _, err := r.Subscribe(b.Context(), s, func([]byte) { n.Add(1) }); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	msg := make([]byte, 200)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if err := a.Publish(ctx, s, msg); err != nil {
			b.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for st := r.Stats(); n.Load()+int64(st.Dropped) < int64(b.N); st = r.Stats() {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages arrived, %+v", n.Load(), b.N, st)
		}
		<-tick.C
	}
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
	b.ReportMetric(float64(r.Stats().Dropped), "dropped")
}
