package broker_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/herald-push/herald/internal/broker"
	"github.com/herald-push/herald/internal/broker/brokertest"
)

func memoryCluster(t *testing.T, opts []broker.Options) (*broker.Network, []*broker.Memory, []broker.Broker) {
	nw := broker.NewNetwork()
	var ms []*broker.Memory
	var bs []broker.Broker
	for i, o := range opts {
		m := nw.Node(fmt.Sprint("node", i), o)
		ms = append(ms, m)
		bs = append(bs, m)
	}
	return nw, ms, bs
}

func TestMemoryConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Config{
		NewCluster: func(t *testing.T, opts []broker.Options) []broker.Broker {
			_, _, bs := memoryCluster(t, opts)
			return bs
		},
		NewOutageCluster: func(t *testing.T, opts []broker.Options) ([]broker.Broker, func(bool)) {
			nw, ms, bs := memoryCluster(t, opts)
			return bs, func(down bool) {
				for _, m := range ms {
					nw.Partition(m, down)
				}
			}
		},
	})
}

// TestMemorySingleNode: with no other node Publish sends nothing and
// allocates nothing.
func TestMemorySingleNode(t *testing.T) {
	m := broker.NewNetwork().Node("solo", broker.Options{})
	defer m.Close()
	called := false
	if _, err := m.Subscribe(t.Context(), broker.UserSubject("app", "u"), func([]byte) { called = true }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s := broker.UserSubject("app", "u")
	data := []byte("hello")
	allocs := testing.AllocsPerRun(1000, func() {
		if err := m.Publish(ctx, s, data); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Publish on a one-node network allocates %v times", allocs)
	}
	if called {
		t.Error("the publisher got its own message")
	}
	if st := m.Stats(); st.Published != 0 || st.Received != 0 {
		t.Errorf("Stats %+v; want nothing published or received", st)
	}
}

// TestMemoryLeave: a closed node leaves its network; the others go on.
func TestMemoryLeave(t *testing.T) {
	nw := broker.NewNetwork()
	a, b := nw.Node("a", broker.Options{}), nw.Node("b", broker.Options{})
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Publish(t.Context(), broker.BroadcastSubject("app"), nil); err != nil {
		t.Fatal(err)
	}
	if st := a.Stats(); st.Published != 0 {
		t.Errorf("Stats %+v after publishing alone; want Published 0", st)
	}
}

func BenchmarkMemoryPublishSingleNode(b *testing.B) {
	m := broker.NewNetwork().Node("solo", broker.Options{})
	defer m.Close()
	ctx := context.Background()
	s := broker.TopicSubject("app", "news")
	data := []byte("a message of some length, as they come")
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Publish(ctx, s, data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMemoryPublishTwoNodes(b *testing.B) {
	nw := broker.NewNetwork()
	a, r := nw.Node("a", broker.Options{}), nw.Node("b", broker.Options{PendingLimit: 1 << 30})
	defer a.Close()
	defer r.Close()
	ctx := context.Background()
	s := broker.TopicSubject("app", "news")
	got := make(chan struct{}, 1)
	n := 0
	total := 0
	if _, err := r.Subscribe(ctx, s, func([]byte) {
		n++
		if n == total {
			got <- struct{}{}
		}
	}); err != nil {
		b.Fatal(err)
	}
	data := []byte("a message of some length, as they come")
	b.ReportAllocs()
	total = b.N
	for range b.N {
		if err := a.Publish(ctx, s, data); err != nil {
			b.Fatal(err)
		}
	}
	<-got
}
