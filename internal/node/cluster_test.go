package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/broker"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/protocol"
)

// clusterEnv is several nodes in this process sharing one store and one
// memory broker network, each with its own hub and registry.
type clusterEnv struct {
	nodes []*env
	mem   []*broker.Memory
	net   *broker.Network
	st    store.Store
}

func newClusterEnv(t *testing.T, k int, cfg Config) *clusterEnv {
	t.Helper()
	ce := &clusterEnv{net: broker.NewNetwork(), st: store.NewMemory(store.MemoryOptions{})}
	base := newEnv(t, cfg) // for its token minting
	for i := range k {
		var n *Node
		h := hub.New(hub.Config{Filler: fillerOf(func() *Node { return n }), ReorderWindow: 5 * time.Millisecond})
		id := fmt.Sprintf("n%d", i+1)
		m := ce.net.Node(id, broker.Options{OnResync: func(r broker.Resync) { n.Resync(r) }})
		c := cfg
		c.ID, c.Broker = id, m
		v := auth.NewVerifier(map[string][]byte{"a": []byte(testSecret)}, time.Now)
		n = New(c, v, h, registry.NewMemory(registry.MemoryOptions{Node: registry.NodeInfo{ID: id}}), ce.st)
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = h.Shutdown(context.Background())
			n.Wait()
			_ = m.Close()
		})
		ce.nodes = append(ce.nodes, &env{n: n, h: h, st: ce.st, tok: base.tok})
		ce.mem = append(ce.mem, m)
	}
	return ce
}

// TestClusterInboxAcrossNodes: devices connecting to one node while
// pushes through the others go on get every message once, in order.
func TestClusterInboxAcrossNodes(t *testing.T) {
	ce := newClusterEnv(t, 3, Config{})
	ctx := context.Background()
	const before, during = 200, 600
	for i := range before {
		if _, err := ce.nodes[i%3].n.PushUser(ctx, "a", "u", Message{ID: fmt.Sprint("m", i), Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < during; i += 4 {
				if _, err := ce.nodes[i%2].n.PushUser(ctx, "a", "u", Message{ID: fmt.Sprint("d", i), Payload: []byte("y")}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	var devices []*fakeConn
	for d := range 4 {
		devices = append(devices, ce.nodes[2].connect(t, "u", fmt.Sprint("dev", d)))
	}
	wg.Wait()
	for _, c := range devices {
		if got := c.waitPushes(t, "u:u", before+during); !slices.Equal(got, seqRange(1, before+during)) {
			t.Fatalf("conn %d got %d pushes, not 1..%d once each in order: %s", c.id, len(got), before+during, firstDiff(got))
		}
	}
}

// TestClusterTopicAcrossNodes: publishes through every node at once reach
// subscribers on every node once each, in the topic's order.
func TestClusterTopicAcrossNodes(t *testing.T) {
	ce := newClusterEnv(t, 3, Config{HistorySize: 10000})
	ctx := context.Background()
	var subs []*fakeConn
	for i, e := range ce.nodes {
		c := e.connect(t, fmt.Sprint("s", i), "")
		e.n.onFrame(c, &protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "news"})
		waitReply(t, c, 1)
		subs = append(subs, c)
	}
	const total = 900
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := w; i < total; i += 3 {
				if _, err := ce.nodes[w].n.Publish(ctx, "a", "news", Message{Payload: []byte("p")}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for _, c := range subs {
		if got := c.waitPushes(t, "t:news", total); !slices.Equal(got, seqRange(1, total)) {
			t.Fatalf("subscriber %d got %d pushes, not 1..%d once each in order: %s", c.id, len(got), total, firstDiff(got))
		}
	}
}

// TestClusterPartitionResync: a node cut off from the broker misses what
// the others publish; when it is back, it reads what it missed from the
// store (resync), and a later message shows no gap.
func TestClusterPartitionResync(t *testing.T) {
	ce := newClusterEnv(t, 2, Config{HistorySize: 10000})
	ctx := context.Background()
	a, b := ce.nodes[0], ce.nodes[1]
	sub := b.connect(t, "s", "")
	b.n.onFrame(sub, &protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "news"})
	waitReply(t, sub, 1)
	dev := b.connect(t, "u", "d")
	for range 5 {
		if _, err := a.n.Publish(ctx, "a", "news", Message{Payload: []byte("p")}); err != nil {
			t.Fatal(err)
		}
	}
	sub.waitPushes(t, "t:news", 5)
	ce.net.Partition(ce.mem[1], true)
	if ce.mem[1].Health() == nil {
		t.Fatal("a cut-off broker reports healthy")
	}
	for i := range 20 {
		if _, err := a.n.Publish(ctx, "a", "news", Message{Payload: []byte("p")}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.n.PushUser(ctx, "a", "u", Message{ID: fmt.Sprint("m", i), Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	ce.net.Partition(ce.mem[1], false) // resync: b reads the heads and fills
	if got := sub.waitPushes(t, "t:news", 25); !slices.Equal(got, seqRange(1, 25)) {
		t.Fatalf("after the resync the subscriber has %s", firstDiff(got))
	}
	if got := dev.waitPushes(t, "u:u", 20); !slices.Equal(got, seqRange(1, 20)) {
		t.Fatalf("after the resync the device has %s", firstDiff(got))
	}
	if _, err := a.n.Publish(ctx, "a", "news", Message{Payload: []byte("p")}); err != nil {
		t.Fatal(err)
	}
	if got := sub.waitPushes(t, "t:news", 26); !slices.Equal(got, seqRange(1, 26)) {
		t.Fatalf("then: %s", firstDiff(got))
	}
}

// TestClusterKickAndReplace: a kick and a duplicate login reach the node
// that holds the connection through its control subject.
func TestClusterKickAndReplace(t *testing.T) {
	ce := newClusterEnv(t, 2, Config{})
	a, b := ce.nodes[0], ce.nodes[1]
	c := b.connect(t, "u", "d")
	// a's registry is its own here, so the session is told by hand: what
	// a shared registry's Lookup would return.
	s := c.Session().(*session).reg
	if !a.n.closeSession(s, protocol.NewDisconnect(protocol.DisconnectKicked)) {
		t.Fatal("control message not sent")
	}
	deadline := time.Now().Add(10 * time.Second)
	for !c.Closed() {
		if time.Now().After(deadline) {
			t.Fatal("the connection on the other node was not closed")
		}
		<-time.After(time.Millisecond) // polling for the remote close
	}
	c.mu.Lock()
	code := c.closed.Code
	c.mu.Unlock()
	if code != protocol.DisconnectKicked {
		t.Fatalf("closed with %v", code)
	}
}

// waitReply waits for the REPLY to request id.
func waitReply(t *testing.T, c *fakeConn, id uint32) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		for _, f := range c.frames {
			if f.Type == protocol.TypeReply && f.ID == id {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		select {
		case <-c.arrived:
		case <-deadline:
			t.Fatalf("conn %d: no REPLY %d", c.id, id)
		}
	}
}
