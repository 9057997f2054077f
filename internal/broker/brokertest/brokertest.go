// Package brokertest is the conformance suite of broker.Broker. Every
// implementation runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Config{
//			NewCluster: func(t *testing.T, opts []broker.Options) []broker.Broker {
//				nw := broker.NewNetwork()
//				var bs []broker.Broker
//				for i, o := range opts {
//					bs = append(bs, nw.Node(fmt.Sprint("n", i), o))
//				}
//				return bs
//			},
//		})
//	}
//
// The brokers that one NewCluster call returns are the nodes of one
// cluster that no other subtest sees. An implementation that can simulate
// an outage sets NewOutageCluster too, and the suite checks what the
// contract says of outages: Publish fails at once with ErrUnavailable,
// Health is non-nil, and after the outage Health returns to nil by itself,
// OnResync reports every subscription and messages flow again.
package brokertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/broker"
)

// Config tells Run how to make clusters.
type Config struct {
	// NewCluster returns one broker per element of opts, each made with
	// those options, as the nodes of a new cluster. It cleans up after t;
	// the suite closes the brokers itself (closing twice must be
	// harmless).
	NewCluster func(t *testing.T, opts []broker.Options) []broker.Broker
	// NewOutageCluster, if set, is NewCluster for the outage tests: it
	// also returns outage, which cuts every node off from the others
	// (down true, as when the NATS server stops) or ends that (down
	// false, as when it is back).
	NewOutageCluster func(t *testing.T, opts []broker.Options) (nodes []broker.Broker, outage func(down bool))
	// Wait bounds every wait for something eventually true (a message, a
	// resync, Health); default 10s.
	Wait time.Duration
}

// Run runs the suite.
func Run(t *testing.T, cfg Config) {
	if cfg.Wait <= 0 {
		cfg.Wait = 10 * time.Second
	}
	tests := []struct {
		name string
		fn   func(e *env)
	}{
		{"OnlyInterestedOthers", testOnlyInterestedOthers},
		{"NoEcho", testNoEcho},
		{"OrderUnderConcurrency", testOrderUnderConcurrency},
		{"PublishRightAfterSubscribe", testPublishRightAfterSubscribe},
		{"SharedRegistration", testSharedRegistration},
		{"UnsubscribeStopsDelivery", testUnsubscribeStopsDelivery},
		{"NodeSubjects", testNodeSubjects},
		{"InvalidSubjects", testInvalidSubjects},
		{"Close", testClose},
		{"Stats", testStats},
		{"Healthy", testHealthy},
		{"Payloads", testPayloads},
		{"Names", testNames},
		{"Drops", testDrops},
	}
	if cfg.NewOutageCluster != nil {
		tests = append(tests, struct {
			name string
			fn   func(e *env)
		}{"Outage", testOutage})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(&env{t: t, ctx: t.Context(), cfg: cfg})
		})
	}
}

// env is one subtest.
type env struct {
	t   *testing.T
	ctx context.Context
	cfg Config
}

// cluster makes n nodes with default options.
func (e *env) cluster(n int) []broker.Broker {
	return e.clusterWith(make([]broker.Options, n))
}

func (e *env) clusterWith(opts []broker.Options) []broker.Broker {
	e.t.Helper()
	bs := e.cfg.NewCluster(e.t, opts)
	if len(bs) != len(opts) {
		e.t.Fatalf("NewCluster returned %d brokers for %d options", len(bs), len(opts))
	}
	for _, b := range bs {
		e.t.Cleanup(func() { _ = b.Close() })
	}
	e.healthy(bs...)
	return bs
}

// healthy waits until every b's Health is nil.
func (e *env) healthy(bs ...broker.Broker) {
	e.t.Helper()
	for i, b := range bs {
		e.eventually(fmt.Sprintf("node %d healthy", i), b.Health)
	}
}

// eventually calls f until it returns nil, for at most cfg.Wait.
func (e *env) eventually(what string, f func() error) {
	e.t.Helper()
	deadline := time.Now().Add(e.cfg.Wait)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: still failing after %v: %v", what, e.cfg.Wait, err)
		}
		select {
		case <-tick.C:
		case <-e.ctx.Done():
			e.t.Fatalf("%s: %v (last: %v)", what, e.ctx.Err(), err)
		}
	}
}

func (e *env) publish(b broker.Broker, s broker.Subject, data string) {
	e.t.Helper()
	if err := b.Publish(e.ctx, s, []byte(data)); err != nil {
		e.t.Fatalf("Publish(%v, %q): %v", s, data, err)
	}
}

// inbox records what a handler gets.
type inbox struct {
	mu   sync.Mutex
	msgs []string
	more chan struct{} // gets a token when a message arrives
}

func newInbox() *inbox { return &inbox{more: make(chan struct{}, 1)} }

func (in *inbox) handler(data []byte) {
	in.mu.Lock()
	in.msgs = append(in.msgs, string(data))
	in.mu.Unlock()
	select {
	case in.more <- struct{}{}:
	default:
	}
}

func (in *inbox) got() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return slices.Clone(in.msgs)
}

func (e *env) subscribe(b broker.Broker, s broker.Subject, h broker.Handler) broker.Subscription {
	e.t.Helper()
	sub, err := b.Subscribe(e.ctx, s, h)
	if err != nil {
		e.t.Fatalf("Subscribe(%v): %v", s, err)
	}
	return sub
}

// wait waits until in holds n messages and returns them.
func (e *env) wait(in *inbox, n int) []string {
	e.t.Helper()
	deadline := time.NewTimer(e.cfg.Wait)
	defer deadline.Stop()
	for {
		if got := in.got(); len(got) >= n {
			return got
		}
		select {
		case <-in.more:
		case <-deadline.C:
			got := in.got()
			e.t.Fatalf("got %d messages after %v, want %d: %q", len(got), e.cfg.Wait, n, tail(got))
		}
	}
}

func tail(s []string) []string {
	if len(s) > 10 {
		return s[len(s)-10:]
	}
	return s
}

// want waits for exactly want in in.
func (e *env) want(in *inbox, want ...string) {
	e.t.Helper()
	got := e.wait(in, len(want))
	if !slices.Equal(got, want) {
		e.t.Fatalf("got %q, want %q", tail(got), tail(want))
	}
}

// barrier makes sure that what from published before it reached to (on
// any subject from's connection carries in order) has arrived: from
// publishes to a node subject only to subscribes to and waits for it.
func (e *env) barrier(from, to broker.Broker) {
	e.t.Helper()
	s := broker.NodeSubject(fmt.Sprintf("barrier-%p", to))
	in := newInbox()
	sub := e.subscribe(to, s, in.handler)
	defer sub.Unsubscribe()
	e.publish(from, s, "barrier")
	e.want(in, "barrier")
}

func testOnlyInterestedOthers(e *env) {
	n := e.cluster(3)
	a, b, c := n[0], n[1], n[2]
	s := broker.UserSubject("app", "alice")
	inB := newInbox()
	e.subscribe(b, s, inB.handler)
	other := newInbox()
	e.subscribe(c, broker.UserSubject("app", "bob"), other.handler)
	e.subscribe(c, broker.TopicSubject("app", "alice"), other.handler)
	e.subscribe(c, broker.UserSubject("app2", "alice"), other.handler)
	for i := range 3 {
		e.publish(a, s, fmt.Sprint("m", i))
	}
	e.want(inB, "m0", "m1", "m2")
	e.barrier(a, c)
	if got := other.got(); len(got) > 0 {
		e.t.Fatalf("node without interest got %q", got)
	}
	if r := c.Stats().Received; r != 1 { // the barrier
		e.t.Fatalf("node without interest: Stats.Received = %d, want 1 (the barrier)", r)
	}
}

func testNoEcho(e *env) {
	n := e.cluster(2)
	a, b := n[0], n[1]
	s := broker.TopicSubject("app", "news")
	inA, inB := newInbox(), newInbox()
	e.subscribe(a, s, inA.handler)
	e.subscribe(b, s, inB.handler)
	e.publish(a, s, "from a")
	e.publish(b, s, "from b")
	e.want(inB, "from a")
	e.want(inA, "from b")
	e.barrier(a, b)
	e.barrier(b, a)
	if got := inA.got(); len(got) != 1 {
		e.t.Fatalf("publisher a got %q; want only b's", got)
	}
	if got := inB.got(); len(got) != 1 {
		e.t.Fatalf("publisher b got %q; want only a's", got)
	}
}

// testOrderUnderConcurrency has three nodes publish to one subject
// concurrently, and one of them to several subjects: each publisher's
// messages arrive in the order published, none lost (within the pending
// limit).
func testOrderUnderConcurrency(e *env) {
	const perPublisher = 500
	n := e.cluster(4)
	recv, pubs := n[0], n[1:]
	shared := broker.TopicSubject("app", "shared")
	own := make([]broker.Subject, len(pubs))
	var mu sync.Mutex
	seen := map[string][]int{} // "subject/publisher" -> sequence numbers
	total := atomic.Int64{}
	done := make(chan struct{})
	want := int64(2 * len(pubs) * perPublisher)
	h := func(s broker.Subject) broker.Handler {
		return func(data []byte) {
			var p, i int
			if _, err := fmt.Sscanf(string(data), "%d/%d", &p, &i); err != nil {
				e.t.Errorf("bad message %q", data)
				return
			}
			mu.Lock()
			k := fmt.Sprintf("%v/%d", s, p)
			seen[k] = append(seen[k], i)
			mu.Unlock()
			if total.Add(1) == want {
				close(done)
			}
		}
	}
	e.subscribe(recv, shared, h(shared))
	for p := range pubs {
		own[p] = broker.UserSubject("app", fmt.Sprint("user", p))
		e.subscribe(recv, own[p], h(own[p]))
	}
	var wg sync.WaitGroup
	for p, b := range pubs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perPublisher {
				msg := []byte(fmt.Sprintf("%d/%d", p, i))
				if err := b.Publish(e.ctx, shared, msg); err != nil {
					e.t.Errorf("Publish: %v", err)
					return
				}
				if err := b.Publish(e.ctx, own[p], msg); err != nil {
					e.t.Errorf("Publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(e.cfg.Wait):
		e.t.Fatalf("got %d messages after %v, want %d", total.Load(), e.cfg.Wait, want)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, seq := range seen {
		for i, v := range seq {
			if v != i {
				e.t.Fatalf("%s: message %d is %d; got %v...", k, i, v, seq[:min(len(seq), i+3)])
			}
		}
	}
}

// testPublishRightAfterSubscribe: a message published after Subscribe
// returns arrives, every time.
func testPublishRightAfterSubscribe(e *env) {
	n := e.cluster(2)
	a, b := n[0], n[1]
	for i := range 50 {
		s := broker.TopicSubject("app", fmt.Sprint("fresh", i))
		in := newInbox()
		e.subscribe(b, s, in.handler)
		e.publish(a, s, "first")
		e.want(in, "first")
	}
}

// testSharedRegistration: subscriptions to one subject on one node share
// one registration; each handler gets each message; the last Unsubscribe
// drops the interest, and a later Subscribe starts afresh.
func testSharedRegistration(e *env) {
	n := e.cluster(2)
	a, b := n[0], n[1]
	s := broker.UserSubject("app", "carol")
	in1, in2 := newInbox(), newInbox()
	sub1 := e.subscribe(b, s, in1.handler)
	sub2 := e.subscribe(b, s, in2.handler)
	if got := b.Stats().Subjects; got != 1 {
		e.t.Fatalf("Stats.Subjects = %d with two subscriptions to one subject, want 1", got)
	}
	e.publish(a, s, "both")
	e.want(in1, "both")
	e.want(in2, "both")
	if err := sub1.Unsubscribe(); err != nil {
		e.t.Fatal(err)
	}
	if err := sub1.Unsubscribe(); err != nil {
		e.t.Fatalf("second Unsubscribe: %v", err)
	}
	if got := b.Stats().Subjects; got != 1 {
		e.t.Fatalf("Stats.Subjects = %d with one subscription left, want 1", got)
	}
	e.publish(a, s, "second")
	e.want(in2, "both", "second")
	e.barrier(a, b)
	if got := in1.got(); len(got) != 1 {
		e.t.Fatalf("unsubscribed handler got %q", got)
	}
	if err := sub2.Unsubscribe(); err != nil {
		e.t.Fatal(err)
	}
	if got := b.Stats().Subjects; got != 0 {
		e.t.Fatalf("Stats.Subjects = %d after the last Unsubscribe, want 0", got)
	}
	e.publish(a, s, "nobody")
	e.barrier(a, b) // "nobody" is past before the next Subscribe
	in3 := newInbox()
	e.subscribe(b, s, in3.handler)
	e.publish(a, s, "again")
	e.want(in3, "again")
	if got := in2.got(); len(got) != 2 {
		e.t.Fatalf("unsubscribed handler got %q", got)
	}
}

// testUnsubscribeStopsDelivery: after Unsubscribe returns, at most the
// call under way finishes; no call starts later.
func testUnsubscribeStopsDelivery(e *env) {
	n := e.cluster(2)
	a, b := n[0], n[1]
	s := broker.TopicSubject("app", "stream")
	var gone atomic.Bool
	var late, calls atomic.Int64
	started := make(chan struct{})
	var once sync.Once
	sub := e.subscribe(b, s, func([]byte) {
		if gone.Load() {
			late.Add(1)
		}
		if calls.Add(1) == 10 {
			once.Do(func() { close(started) })
		}
	})
	stop := make(chan struct{})
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		for i := 0; i < 100000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := a.Publish(e.ctx, s, []byte("x")); err != nil {
				e.t.Errorf("Publish: %v", err)
				return
			}
		}
	}()
	select {
	case <-started:
	case <-time.After(e.cfg.Wait):
		e.t.Fatal("no message arrived")
	}
	if err := sub.Unsubscribe(); err != nil {
		e.t.Fatal(err)
	}
	gone.Store(true)
	close(stop)
	<-pubDone
	e.barrier(a, b)
	if l := late.Load(); l > 1 {
		e.t.Fatalf("%d handler calls started after Unsubscribe returned (at most the one under way may)", l)
	}
}

func testNodeSubjects(e *env) {
	n := e.cluster(3)
	a, b, c := n[0], n[1], n[2]
	inB, inC := newInbox(), newInbox()
	e.subscribe(b, broker.NodeSubject("node-b"), inB.handler)
	e.subscribe(c, broker.NodeSubject("node-c"), inC.handler)
	e.publish(a, broker.NodeSubject("node-b"), `{"op":"close"}`)
	e.publish(a, broker.NodeSubject("node-c"), "to c")
	e.publish(a, broker.NodeSubject("node-x"), "to nobody")
	e.want(inB, `{"op":"close"}`)
	e.want(inC, "to c")
	e.barrier(a, b)
	e.barrier(a, c)
	if len(inB.got()) != 1 || len(inC.got()) != 1 {
		e.t.Fatalf("b got %q, c got %q", inB.got(), inC.got())
	}
}

func testInvalidSubjects(e *env) {
	b := e.cluster(2)[0]
	long := strings.Repeat("x", broker.MaxNameLen+1)
	for _, s := range []broker.Subject{
		{},
		{Kind: 99, App: "a", Name: "b"},
		{Kind: broker.User, App: "a"},
		{Kind: broker.User, Name: "u"},
		{Kind: broker.Topic, App: "a"},
		{Kind: broker.Broadcast},
		{Kind: broker.Broadcast, App: "a", Name: "b"},
		{Kind: broker.Node},
		{Kind: broker.Node, App: "a", Name: "n"},
		broker.UserSubject(long, "u"),
		broker.TopicSubject("a", long),
	} {
		if err := b.Publish(e.ctx, s, []byte("x")); !errors.Is(err, broker.ErrInvalidSubject) {
			e.t.Errorf("Publish(%v) = %v, want ErrInvalidSubject", s, err)
		}
		if sub, err := b.Subscribe(e.ctx, s, func([]byte) {}); !errors.Is(err, broker.ErrInvalidSubject) || sub != nil {
			e.t.Errorf("Subscribe(%v) = %v, %v; want ErrInvalidSubject", s, sub, err)
		}
	}
	if got := b.Stats().Subjects; got != 0 {
		e.t.Errorf("Stats.Subjects = %d after invalid subscriptions", got)
	}
	max := strings.Repeat("\xff", broker.MaxNameLen)
	if err := b.Publish(e.ctx, broker.UserSubject(max, max), []byte("x")); err != nil {
		e.t.Errorf("Publish with names of MaxNameLen bytes: %v", err)
	}
}

// testClose: Close waits for the handler call under way; then everything
// fails with ErrClosed, Close again too; the other nodes go on.
func testClose(e *env) {
	n := e.cluster(3)
	a, b, c := n[0], n[1], n[2]
	s := broker.UserSubject("app", "dave")
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	e.t.Cleanup(unblock) // before the brokers close, if the test fails
	var finished atomic.Bool
	sub := e.subscribe(b, s, func([]byte) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-release
		finished.Store(true)
	})
	inC := newInbox()
	e.subscribe(c, s, inC.handler)
	e.publish(a, s, "1")
	e.publish(a, s, "2")
	select {
	case <-entered:
	case <-time.After(e.cfg.Wait):
		e.t.Fatal("handler not called")
	}
	closing := make(chan struct{})
	closed := make(chan error, 1)
	go func() {
		close(closing)
		closed <- b.Close()
	}()
	<-closing
	unblock()
	if err := <-closed; err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	if !finished.Load() {
		e.t.Fatal("Close returned while a handler call was under way")
	}
	if err := b.Close(); !errors.Is(err, broker.ErrClosed) {
		e.t.Fatalf("second Close = %v, want ErrClosed", err)
	}
	if err := b.Publish(e.ctx, s, []byte("x")); !errors.Is(err, broker.ErrClosed) {
		e.t.Fatalf("Publish after Close = %v, want ErrClosed", err)
	}
	if _, err := b.Subscribe(e.ctx, s, func([]byte) {}); !errors.Is(err, broker.ErrClosed) {
		e.t.Fatalf("Subscribe after Close = %v, want ErrClosed", err)
	}
	if err := b.Health(); !errors.Is(err, broker.ErrClosed) {
		e.t.Fatalf("Health after Close = %v, want ErrClosed", err)
	}
	if err := sub.Unsubscribe(); err != nil {
		e.t.Fatalf("Unsubscribe after Close: %v", err)
	}
	_ = b.Stats()
	e.publish(a, s, "3")
	e.want(inC, "1", "2", "3")
}

func testStats(e *env) {
	n := e.cluster(2)
	a, b := n[0], n[1]
	s := broker.TopicSubject("app", "counted")
	in := newInbox()
	e.subscribe(b, s, in.handler)
	e.subscribe(b, broker.TopicSubject("app", "other"), in.handler)
	for range 3 {
		e.publish(a, s, "x")
	}
	_ = a.Publish(e.ctx, broker.Subject{}, nil)
	e.wait(in, 3)
	sa, sb := a.Stats(), b.Stats()
	if sa.Published != 3 || sa.PublishErrors != 1 || sa.Subjects != 0 {
		e.t.Errorf("publisher: %+v; want Published 3, PublishErrors 1, Subjects 0", sa)
	}
	if sb.Received != 3 || sb.Subjects != 2 || sb.Dropped != 0 || sb.Resyncs != 0 || sb.Published != 0 {
		e.t.Errorf("receiver: %+v; want Received 3, Subjects 2, the rest 0", sb)
	}
}

func testHealthy(e *env) {
	n := e.cluster(2)
	s := broker.BroadcastSubject("app")
	in := newInbox()
	e.subscribe(n[1], s, in.handler)
	e.publish(n[0], s, "x")
	e.want(in, "x")
	for i, b := range n {
		if err := b.Health(); err != nil {
			e.t.Errorf("node %d: Health = %v", i, err)
		}
	}
}

// testPayloads: any bytes, empty and large payloads arrive intact, and the
// publisher may reuse its buffer when Publish returns.
func testPayloads(e *env) {
	n := e.cluster(3)
	a := n[0]
	s := broker.UserSubject("app", "erin")
	inB, inC := newInbox(), newInbox()
	e.subscribe(n[1], s, inB.handler)
	e.subscribe(n[2], s, inC.handler)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	large := bytes.Repeat([]byte("0123456789abcdef\x00\r\n"), 64<<10/19)
	payloads := [][]byte{{}, all, []byte("\r\nPUB x 1\r\n"), large, []byte("\xff\xfe")}
	buf := make([]byte, 0, len(large))
	var want []string
	for _, p := range payloads {
		buf = append(buf[:0], p...)
		if err := a.Publish(e.ctx, s, buf); err != nil {
			e.t.Fatalf("Publish(%d bytes): %v", len(p), err)
		}
		for i := range buf {
			buf[i] = '!'
		}
		want = append(want, string(p))
	}
	for _, in := range []*inbox{inB, inC} {
		got := e.wait(in, len(want))
		for i := range want {
			if got[i] != want[i] {
				e.t.Fatalf("payload %d: got %d bytes %.40q, want %d bytes %.40q", i, len(got[i]), got[i], len(want[i]), want[i])
			}
		}
	}
}

// testNames: app and names of any bytes address distinct subjects, also
// those whose encodings could be confused.
func testNames(e *env) {
	n := e.cluster(2)
	a, b := n[0], n[1]
	names := []string{"a.b", "a%2Eb", "a_2Eb", "*", ">", "a.*", "a.>", " ", "a b", "ü用户", "\x00", "\xff", "%", "%25", ".", "..", "x"}
	var subjects []broker.Subject
	for _, nm := range names {
		subjects = append(subjects, broker.UserSubject("app", nm), broker.TopicSubject("app", nm),
			broker.UserSubject(nm, "u"), broker.BroadcastSubject(nm), broker.NodeSubject(nm))
	}
	subjects = append(subjects, broker.UserSubject("a.b", "c"), broker.UserSubject("a", "b.c"), broker.TopicSubject("a.b", "c"))
	inboxes := make(map[broker.Subject]*inbox)
	for _, s := range subjects {
		if inboxes[s] != nil {
			continue
		}
		in := newInbox()
		inboxes[s] = in
		e.subscribe(b, s, in.handler)
	}
	for s := range inboxes {
		e.publish(a, s, s.String())
	}
	for s, in := range inboxes {
		e.want(in, s.String())
	}
	e.barrier(a, b)
	for s, in := range inboxes {
		if got := in.got(); len(got) != 1 {
			e.t.Errorf("%v got %q", s, got)
		}
	}
}

// testDrops: a node whose handler falls behind drops past its pending
// limit, never silently: Stats counts the drops, Health is non-nil until
// OnResync names the subject (or every subject), then nil again; what
// arrives is in order.
func testDrops(e *env) {
	resyncs := make(chan broker.Resync, 100)
	n := e.clusterWith([]broker.Options{{}, {PendingLimit: 4, OnResync: func(r broker.Resync) { resyncs <- r }}})
	a, b := n[0], n[1]
	s := broker.TopicSubject("app", "flood")
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	e.t.Cleanup(unblock)
	var mu sync.Mutex
	var got []int
	e.subscribe(b, s, func(data []byte) {
		<-release
		var i int
		fmt.Sscan(string(data), &i)
		mu.Lock()
		got = append(got, i)
		mu.Unlock()
	})
	const total = 200
	for i := range total {
		e.publish(a, s, fmt.Sprint(i))
	}
	e.eventually("drops counted", func() error {
		if st := b.Stats(); st.Dropped == 0 {
			return fmt.Errorf("Stats %+v", st)
		}
		return nil
	})
	e.eventually("Health non-nil with drops not yet reported", func() error {
		if b.Health() == nil {
			return errors.New("Health is nil")
		}
		return nil
	})
	unblock()
	select {
	case r := <-resyncs:
		if r.Subjects != nil && !slices.Contains(r.Subjects, s) {
			e.t.Fatalf("OnResync(%+v) does not name %v", r, s)
		}
	case <-time.After(e.cfg.Wait):
		e.t.Fatal("no OnResync after drops")
	}
	e.healthy(b)
	st := b.Stats()
	if st.Resyncs == 0 || st.Received > total || st.Dropped >= st.Received {
		e.t.Fatalf("Stats %+v after %d published", st, total)
	}
	// What was not dropped arrives, in order.
	e.eventually("the kept messages arrive", func() error {
		mu.Lock()
		defer mu.Unlock()
		if uint64(len(got)) != b.Stats().Received-b.Stats().Dropped {
			return fmt.Errorf("handled %d, %+v", len(got), b.Stats())
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.IsSorted(got) || len(got) == 0 || got[0] != 0 {
		e.t.Fatalf("kept messages out of order: %v", got)
	}
}

// testOutage: during an outage Publish fails at once with ErrUnavailable
// and Health is non-nil; a Subscribe still returns its subscription.
// After it, Health turns nil by itself, OnResync reports every
// subscription, and messages flow to subscriptions made before and
// during the outage.
func testOutage(e *env) {
	var resyncs [2]chan broker.Resync
	opts := make([]broker.Options, 2)
	for i := range opts {
		ch := make(chan broker.Resync, 100)
		resyncs[i] = ch
		opts[i].OnResync = func(r broker.Resync) { ch <- r }
	}
	n, outage := e.cfg.NewOutageCluster(e.t, opts)
	for _, b := range n {
		e.t.Cleanup(func() { _ = b.Close() })
	}
	e.healthy(n...)
	a, b := n[0], n[1]
	before := broker.UserSubject("app", "before")
	in := newInbox()
	e.subscribe(b, before, in.handler)
	e.publish(a, before, "1")
	e.want(in, "1")

	outage(true)
	e.eventually("Publish fails with ErrUnavailable", func() error {
		start := time.Now()
		err := a.Publish(e.ctx, before, []byte("lost"))
		if d := time.Since(start); d > time.Second {
			e.t.Fatalf("Publish took %v during the outage", d)
		}
		if !errors.Is(err, broker.ErrUnavailable) {
			return fmt.Errorf("Publish = %v", err)
		}
		return nil
	})
	for i, x := range n {
		e.eventually(fmt.Sprintf("node %d unhealthy", i), func() error {
			if x.Health() == nil {
				return errors.New("Health is nil")
			}
			return nil
		})
	}
	if st := a.Stats(); st.PublishErrors == 0 {
		e.t.Errorf("Stats after failed publishes: %+v", st)
	}
	during := broker.UserSubject("app", "during")
	inDuring := newInbox()
	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	sub, err := b.Subscribe(ctx, during, inDuring.handler)
	cancel()
	if err != nil || sub == nil {
		e.t.Fatalf("Subscribe during the outage = %v, %v; want the subscription", sub, err)
	}

	outage(false)
	e.healthy(n...)
	for i, ch := range resyncs {
		// Resyncs of some subjects may come first (the subscription made
		// during the outage); one must report every subscription.
		timeout := time.After(e.cfg.Wait)
		for all := false; !all; {
			select {
			case r := <-ch:
				all = r.Subjects == nil
			case <-timeout:
				e.t.Fatalf("node %d: no OnResync with nil Subjects after the outage", i)
			}
		}
	}
	e.publish(a, before, "2")
	e.publish(a, during, "3")
	got := e.wait(in, 2)
	if got[len(got)-1] != "2" {
		e.t.Fatalf("after the outage: got %q", got)
	}
	e.want(inDuring, "3")
	if st := b.Stats(); st.Resyncs == 0 {
		e.t.Errorf("Stats after the outage: %+v", st)
	}
}
