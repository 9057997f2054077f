package node

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/protocol"
)

// fakeConn is a connection that records what the node sends it.
type fakeConn struct {
	id      uint64
	mu      sync.Mutex
	frames  []*protocol.Frame
	closed  *protocol.Disconnect
	session atomic.Value
	authed  atomic.Bool
	arrived chan struct{} // a frame arrived (capacity 1)
}

var connIDs atomic.Uint64

func newFakeConn() *fakeConn {
	return &fakeConn{id: connIDs.Add(1), arrived: make(chan struct{}, 1)}
}

func (c *fakeConn) ID() uint64 { return c.id }

func (c *fakeConn) Send(frames ...*protocol.Encoded) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed != nil {
		return fmt.Errorf("closed")
	}
	for _, e := range frames {
		c.frames = append(c.frames, e.Frame())
	}
	select {
	case c.arrived <- struct{}{}:
	default:
	}
	return nil
}

func (c *fakeConn) SendFrame(f *protocol.Frame) error { return c.Send(protocol.Encode(f)) }

func (c *fakeConn) Close(d protocol.Disconnect) {
	c.mu.Lock()
	if c.closed == nil {
		c.closed = &d
	}
	c.mu.Unlock()
}

func (c *fakeConn) Fail(e *protocol.Error, d protocol.Disconnect) {
	_ = c.SendFrame(e.Frame())
	if e.Code.Fatal() {
		c.Close(d)
	}
}

func (c *fakeConn) Authenticate() bool    { return c.authed.CompareAndSwap(false, true) }
func (c *fakeConn) Closed() bool          { c.mu.Lock(); defer c.mu.Unlock(); return c.closed != nil }
func (c *fakeConn) Session() any          { return c.session.Load() }
func (c *fakeConn) SetSession(v any)      { c.session.Store(v) }
func (c *fakeConn) RemoteAddr() string    { return "fake" }
func (c *fakeConn) Opened() time.Time     { return time.Time{} }
func (c *fakeConn) TransportName() string { return "fake" }

// pushes returns the seqs of the PUSH frames of stream received so far.
func (c *fakeConn) pushes(stream string) []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []uint64
	for _, f := range c.frames {
		if f.Type == protocol.TypePush && f.Stream == stream {
			out = append(out, f.Seq)
		}
	}
	return out
}

// waitPushes waits until c has n PUSH frames of stream.
func (c *fakeConn) waitPushes(t *testing.T, stream string, n int) []uint64 {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		if got := c.pushes(stream); len(got) >= n {
			return got
		}
		select {
		case <-c.arrived:
		case <-deadline:
			t.Fatalf("conn %d: %d pushes of %s, want %d", c.id, len(c.pushes(stream)), stream, n)
		}
	}
}

const testSecret = "test-secret-0123456789"

type env struct {
	n   *Node
	h   *hub.Hub
	st  store.Store
	tok func(user string) string
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	st := store.NewMemory(store.MemoryOptions{})
	var n *Node
	h := hub.New(hub.Config{Filler: fillerOf(func() *Node { return n }), ReorderWindow: 5 * time.Millisecond})
	v := auth.NewVerifier(map[string][]byte{"a": []byte(testSecret)}, time.Now)
	cfg.ID = "test"
	cfg.Logger = nil
	n = New(cfg, v, h, registry.NewMemory(registry.MemoryOptions{Node: registry.NodeInfo{ID: "test"}}), st)
	t.Cleanup(func() {
		_ = h.Shutdown(context.Background())
		n.Wait()
	})
	tok := func(user string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"app": "a", "sub": user, "topics": []string{"*"}, "exp": time.Now().Add(time.Hour).Unix(),
		}).SignedString([]byte(testSecret))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	return &env{n: n, h: h, st: st, tok: tok}
}

type fillerOf func() *Node

func (f fillerOf) Fill(ctx context.Context, s hub.Stream, after, before uint64) (string, []hub.Ordered, error) {
	return f().Fill(ctx, s, after, before)
}

// connect sends CONNECT on a new fake connection.
func (e *env) connect(t *testing.T, user, device string, resume ...protocol.Position) *fakeConn {
	t.Helper()
	c := newFakeConn()
	e.n.onFrame(c, &protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: e.tok(user), Device: device, Resume: resume})
	if c.Session() == nil {
		t.Fatalf("CONNECT refused: %+v", c.frames)
	}
	return c
}

// TestCatchUpWhilePushing: a device that connects while pushes to its
// user go on gets every message once, in order: what was stored before
// from its catch-up, the rest live, with nothing lost or repeated where
// the two meet.
func TestCatchUpWhilePushing(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	const before, during = 300, 700
	for i := range before {
		if _, err := e.n.PushUser(ctx, "a", "u", Message{ID: fmt.Sprint("m", i), Payload: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < during; i += 4 {
				if _, err := e.n.PushUser(ctx, "a", "u", Message{ID: fmt.Sprint("d", i), Payload: []byte("y")}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	var devices []*fakeConn
	for d := range 5 {
		devices = append(devices, e.connect(t, "u", fmt.Sprint("dev", d)))
	}
	wg.Wait()
	for _, c := range devices {
		if got := c.waitPushes(t, "u:u", before+during); !slices.Equal(got, seqRange(1, before+during)) {
			t.Fatalf("conn %d got %d pushes, not 1..%d once each in order", c.id, len(got), before+during)
		}
	}
}

func seqRange(from, to int) []uint64 {
	out := make([]uint64, 0, to-from+1)
	for i := from; i <= to; i++ {
		out = append(out, uint64(i))
	}
	return out
}

// TestRecoverWhilePublishing: subscribers that recover a topic from the
// start while publishes go on get every message once, in order.
func TestRecoverWhilePublishing(t *testing.T) {
	e := newEnv(t, Config{HistorySize: 10000})
	ctx := context.Background()
	epoch, _, _, err := e.st.Head(ctx, historyStream("a", topicStream("news")))
	if err != nil {
		t.Fatal(err)
	}
	const total = 1000
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < total; i += 4 {
				if _, err := e.n.Publish(ctx, "a", "news", Message{Payload: []byte("p")}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	var subs []*fakeConn
	for i := range 6 {
		c := e.connect(t, fmt.Sprint("s", i), "")
		e.n.onFrame(c, &protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "news", Epoch: epoch})
		subs = append(subs, c)
	}
	wg.Wait()
	for _, c := range subs {
		if got := c.waitPushes(t, "t:news", total); !slices.Equal(got, seqRange(1, total)) {
			t.Fatalf("subscriber %d got %d pushes, not 1..%d once each in order: %v", c.id, len(got), total, firstDiff(got))
		}
	}
}

// TestKickDuringCatchUp: a device still receiving its backlog can be
// kicked: it is one of the user's connections from CONNECTED on.
func TestKickDuringCatchUp(t *testing.T) {
	e := newEnv(t, Config{})
	c := e.connect(t, "u", "d")
	if n, err := e.n.Kick(context.Background(), "a", "u", "d", ""); err != nil || n != 1 {
		t.Fatalf("Kick = %d, want 1", n)
	}
	if !c.Closed() {
		t.Fatal("not closed")
	}
}

// firstDiff describes where got first differs from 1, 2, 3...
func firstDiff(got []uint64) string {
	for i, s := range got {
		if s != uint64(i+1) {
			return fmt.Sprintf("at %d: %v", i, got[max(0, i-3):min(len(got), i+4)])
		}
	}
	return "longer"
}

// TestLiveJoinsBeforeConnected: a broadcast, or a push to a device that
// keeps no position, made as soon as CONNECTED was sent reaches the
// connection: its live joins are done before CONNECTED.
func TestLiveJoinsBeforeConnected(t *testing.T) {
	e := newEnv(t, Config{HistorySize: 100})
	ctx := context.Background()
	for i := range 50 {
		c := e.connect(t, fmt.Sprint("u", i), "") // no device: live inbox
		if _, err := e.n.Broadcast(ctx, "a", Message{Payload: []byte("b")}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.n.PushUser(ctx, "a", fmt.Sprint("u", i), Message{Payload: []byte("p")}); err != nil {
			t.Fatal(err)
		}
		c.waitPushes(t, "b", 1)
		c.waitPushes(t, fmt.Sprint("u:u", i), 1)
	}
}
