package server

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

// publishSeq publishes data to topic and returns the answer's seq.
func (h *harness) publishSeq(app, topic string, data any) uint64 {
	h.t.Helper()
	var r struct {
		ID  string `json:"id"`
		Seq uint64 `json:"seq"`
	}
	h.apiOK("POST", "/v1/apps/"+app+"/topics/"+topic+"/messages", keyOf(app), map[string]any{"data": data}, &r)
	if r.Seq == 0 || r.ID == "" {
		h.t.Fatalf("publish to %s: answer without id or seq: %+v", topic, r)
	}
	return r.Seq
}

// subscribeFrom sends SUBSCRIBE with a recovery position and returns the
// PUSH frames that arrive before its REPLY, and the REPLY.
func (c *tconn) subscribeFrom(id uint32, topic, epoch string, seq uint64) ([]*protocol.Frame, *protocol.Frame) {
	c.t.Helper()
	c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: id, Topic: topic, Epoch: epoch, Seq: seq})
	return c.untilReply(id)
}

// untilReply reads PUSH frames until the REPLY with id.
func (c *tconn) untilReply(id uint32) ([]*protocol.Frame, *protocol.Frame) {
	c.t.Helper()
	var pushes []*protocol.Frame
	for {
		f := c.next()
		switch {
		case f.Type == protocol.TypePush:
			pushes = append(pushes, f)
		case f.Type == protocol.TypeReply && f.ID == id:
			return pushes, f
		default:
			c.t.Fatalf("%s: got %s %s; want PUSH or REPLY %d", c.name, f.Type, describe(f), id)
		}
	}
}

// checkSeqs fails unless pushes are exactly the seqs from..to of stream.
func checkSeqs(t *testing.T, what string, pushes []*protocol.Frame, stream string, from, to uint64) {
	t.Helper()
	if len(pushes) != int(to-from+1) && !(to < from && len(pushes) == 0) {
		t.Fatalf("%s: %d pushes; want seqs %d..%d", what, len(pushes), from, to)
	}
	for i, f := range pushes {
		if f.Stream != stream || f.Seq != from+uint64(i) || f.Epoch == "" {
			t.Fatalf("%s: push %d is %s; want %s seq %d with an epoch", what, i, describe(f), stream, from+uint64(i))
		}
	}
}

// TestTopicRecovery: a client that resubscribes with its position gets
// what it missed, in order, then a REPLY that says recovered, then live
// messages; outside the history window, or with another epoch, it is told
// it cannot recover and gets live messages only.
func TestTopicRecovery(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.HistorySize = 5 })
	tok := h.token(appA, "rita", "news", "news2")
	// One transport: recovery is above the codecs, which other tests cover.
	for _, tr := range []transport{wsBinary} {
		topic := "news"
		c := h.connect(tr, "first", tok, "")
		c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: topic})
		_, reply := c.untilReply(1)
		if reply.Stream != "t:news" || reply.Epoch == "" || reply.Seq != 0 || reply.Recovered {
			t.Fatalf("first subscribe: REPLY %s; want stream t:news, an epoch, seq 0", describe(reply))
		}
		epoch := reply.Epoch
		for i := 1; i <= 2; i++ {
			if s := h.publishSeq(appA, topic, i); s != uint64(i) {
				t.Fatalf("publish %d: seq %d", i, s)
			}
			if f := c.expectPush("t:news", []byte(strconv.Itoa(i))); f.Seq != uint64(i) || f.Epoch != epoch {
				t.Fatalf("live %d: %s", i, describe(f))
			}
		}
		c.Close()

		// Missed 3 and 4: recovered, then live.
		h.publishSeq(appA, topic, 3)
		h.publishSeq(appA, topic, 4)
		c = h.connect(tr, "second", tok, "")
		pushes, reply := c.subscribeFrom(2, topic, epoch, 2)
		checkSeqs(t, "recovery", pushes, "t:news", 3, 4)
		if !reply.Recovered || reply.Epoch != epoch || reply.Seq != 4 || reply.Stream != "t:news" {
			t.Fatalf("recovery REPLY %s; want recovered at seq 4", describe(reply))
		}
		h.publishSeq(appA, topic, 5)
		if f := c.expectPush("t:news", []byte("5")); f.Seq != 5 {
			t.Fatalf("live after recovery: %s", describe(f))
		}
		c.Close()

		// Nothing missed: recovered with no replay.
		c = h.connect(tr, "third", tok, "")
		if pushes, reply := c.subscribeFrom(3, topic, epoch, 5); len(pushes) != 0 || !reply.Recovered || reply.Seq != 5 {
			t.Fatalf("up to date: %d pushes, REPLY %s", len(pushes), describe(reply))
		}
		c.Close()

		// Outside the window: 15 more published, history keeps 5.
		for i := 6; i <= 20; i++ {
			h.publishSeq(appA, topic, i)
		}
		waitFor(t, "history trimmed", func() error {
			_, first, _, err := h.srv.store.Head(context.Background(), appA+"/t:news")
			if err != nil || first <= 6 {
				return fmt.Errorf("first %d, err %v", first, err)
			}
			return nil
		})
		c = h.connect(tr, "fourth", tok, "")
		pushes, reply = c.subscribeFrom(4, topic, epoch, 5)
		if len(pushes) != 0 || reply.Recovered || reply.Seq != 20 || reply.Epoch != epoch || !strings.Contains(reply.Reason, "history") {
			t.Fatalf("outside the window: %d pushes, REPLY %s; want not recovered at seq 20 with a reason", len(pushes), describe(reply))
		}
		h.publishSeq(appA, topic, 21)
		if f := c.expectPush("t:news", []byte("21")); f.Seq != 21 {
			t.Fatalf("live after a failed recovery: %s", describe(f))
		}
		c.Close()

		// Another epoch: not recovered, whatever the seq.
		c = h.connect(tr, "fifth", tok, "")
		pushes, reply = c.subscribeFrom(5, topic, "0123456789abcdef0123456789abcdef", 19)
		if len(pushes) != 0 || reply.Recovered || reply.Epoch != epoch || reply.Seq != 21 || !strings.Contains(reply.Reason, "epoch") {
			t.Fatalf("other epoch: %d pushes, REPLY %s; want not recovered, the current epoch and seq 21", len(pushes), describe(reply))
		}
		// A position beyond the end is not recovered either.
		pushes, reply = c.subscribeFrom(6, "news2", epoch, 7)
		if len(pushes) != 0 || reply.Recovered || reply.Seq != 0 {
			t.Fatalf("beyond the end: %d pushes, REPLY %s", len(pushes), describe(reply))
		}
	}
	if st := h.srv.node.Stats(); st.Recovered != 2 || st.Unrecovered != 3 {
		t.Fatalf("stats: recovered %d unrecovered %d; want 2 and 3", st.Recovered, st.Unrecovered)
	}
}

// TestTopicRecoveryAfterRestart: history is on disk: a client recovers
// across a server restart on the same data directory; with the memory
// store the epoch changes and it is told it cannot recover.
func TestTopicRecoveryAfterRestart(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"embedded", "memory"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			mut := func(c *config.Config) { c.DataDir = dir; c.Store = kind }
			h := startServer(t, mut)
			tok := h.token(appA, "sam", "*")
			c := h.connect(wsJSON, "before", tok, "")
			c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "alerts"})
			_, reply := c.untilReply(1)
			epoch := reply.Epoch
			h.publishSeq(appA, "alerts", "a")
			c.expectPush("t:alerts", []byte(`"a"`))
			c.Close()
			h.publishSeq(appA, "alerts", "b")
			if err := h.shutdown(""); err != nil {
				t.Fatal(err)
			}
			h2 := startServer(t, mut)
			c = h2.connect(wsJSON, "after", tok, "")
			pushes, reply := c.subscribeFrom(2, "alerts", epoch, 1)
			if kind == "memory" {
				if len(pushes) != 0 || reply.Recovered || reply.Epoch == epoch {
					t.Fatalf("memory store: %d pushes, REPLY %s; want a new epoch, not recovered", len(pushes), describe(reply))
				}
				return
			}
			checkSeqs(t, "after restart", pushes, "t:alerts", 2, 2)
			if !reply.Recovered || reply.Epoch != epoch {
				t.Fatalf("after restart: REPLY %s; want recovered in epoch %s", describe(reply), epoch)
			}
		})
	}
}

// TestBroadcastRecovery: a client that tracks the broadcast stream (a
// resume position for "b" in CONNECT) learns its position, and after a
// drop receives the broadcasts it missed before live ones.
func TestBroadcastRecovery(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appB, "bob")
	dial := func(name string, resume []protocol.Position) *tconn {
		c := h.dial(rawTCP, name)
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		if _, err := c.Handshake(ctx, tok, "", resume); err != nil {
			t.Fatalf("%s: handshake: %v", name, err)
		}
		return c
	}
	c := dial("first", []protocol.Position{{Stream: "b"}})
	_, reply := c.untilReply(0)
	if reply.Stream != "b" || reply.Epoch == "" || reply.Seq != 0 {
		t.Fatalf("broadcast position: %s", describe(reply))
	}
	epoch := reply.Epoch
	h.broadcast(appB, 1)
	if f := c.expectPush("b", []byte("1")); f.Seq != 1 || f.Epoch != epoch {
		t.Fatalf("live broadcast: %s", describe(f))
	}
	c.Close()
	h.broadcast(appB, 2)
	h.broadcast(appB, 3)
	c = dial("second", []protocol.Position{{Stream: "b", Epoch: epoch, Seq: 1}})
	pushes, reply := c.untilReply(0)
	checkSeqs(t, "broadcast recovery", pushes, "b", 2, 3)
	if !reply.Recovered || reply.Seq != 3 {
		t.Fatalf("broadcast recovery REPLY %s", describe(reply))
	}
	h.broadcast(appB, 4)
	if f := c.expectPush("b", []byte("4")); f.Seq != 4 {
		t.Fatalf("live after recovery: %s", describe(f))
	}
	// A client that does not track the broadcast stream gets no REPLY.
	plain := h.connect(wsBinary, "plain", tok, "")
	h.broadcast(appB, 5)
	plain.expectPush("b", []byte("5"))
}

// TestTopicRecoveryDuringBurst: while messages keep being published, a
// client that drops and resubscribes from its position again and again
// processes every seq once, in order, with no gap.
func TestTopicRecoveryDuringBurst(t *testing.T) {
	t.Parallel()
	const total = 300
	h := startServer(t)
	tok := h.token(appA, "tom", "ticks")
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= total; i++ {
			h.publishSeq(appA, "ticks", i)
		}
	}()
	defer wg.Wait()

	var epoch string
	var last uint64 // last seq processed
	for round := 0; last < total; round++ {
		c := h.connect(wsBinary, "r"+strconv.Itoa(round), tok, "")
		f := &protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "ticks", Epoch: epoch, Seq: last}
		c.write(f)
		pushes, reply := c.untilReply(1)
		if epoch != "" && !reply.Recovered {
			t.Fatalf("round %d: not recovered from %d: %s", round, last, describe(reply))
		}
		process := func(p *protocol.Frame) {
			if p.Seq <= last {
				return // already processed: a repeat the protocol allows
			}
			if p.Seq != last+1 {
				t.Fatalf("round %d: seq %d after %d: a gap", round, p.Seq, last)
			}
			last = p.Seq
		}
		for _, p := range pushes {
			process(p)
		}
		if epoch == "" {
			epoch, last = reply.Epoch, reply.Seq // first subscription starts at the head
			if last > 0 {
				t.Logf("started after seq %d", last)
			}
		} else if reply.Seq > last {
			t.Fatalf("round %d: REPLY at %d after processing only %d", round, reply.Seq, last)
		}
		// Read a few live messages, then drop (the last round reads to the end).
		for n := 0; (n < 40 || round >= 4) && last < total; n++ {
			process(c.expect(protocol.TypePush))
		}
		c.Close()
	}
}

// TestConcurrentPublishes: publishes from many callers at once share
// appends, and a subscriber still receives every seq once, in order, each
// with the payload the API answered that seq for.
func TestConcurrentPublishes(t *testing.T) {
	t.Parallel()
	const callers, each = 8, 40
	h := startServer(t)
	c := h.connect(wsBinary, "sub", h.token(appA, "una", "hot"), "")
	c.subscribe(1, "hot")
	var mu sync.Mutex
	bySeq := make(map[uint64]string)
	var wg sync.WaitGroup
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				payload := fmt.Sprintf("%d-%d", g, i)
				seq := h.publishSeq(appA, "hot", payload)
				mu.Lock()
				if prev, dup := bySeq[seq]; dup {
					t.Errorf("seq %d answered for %s and %s", seq, prev, payload)
				}
				bySeq[seq] = payload
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for seq := uint64(1); seq <= callers*each; seq++ {
		f := c.expect(protocol.TypePush)
		if f.Seq != seq || string(f.Payload) != `"`+bySeq[seq]+`"` {
			t.Fatalf("got seq %d payload %s; want seq %d payload %q", f.Seq, f.Payload, seq, bySeq[seq])
		}
	}
}

// TestRecoveryShared: clients recovering one topic from different
// positions each get exactly what they missed, whether or not an earlier
// recovery's frames are reused, and a publish in between is not missed.
func TestRecoveryShared(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "vic", "quotes")
	c := h.connect(wsBinary, "first", tok, "")
	c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "quotes"})
	_, reply := c.untilReply(1)
	epoch := reply.Epoch
	c.Close()
	for i := 1; i <= 5; i++ {
		h.publishSeq(appA, "quotes", i)
	}
	for _, step := range []struct {
		from    uint64
		publish bool // publish one more first
	}{{2, false}, {3, false}, {0, false}, {4, false}, {4, true}, {1, false}} {
		if step.publish {
			h.publishSeq(appA, "quotes", "more")
		}
		c := h.connect(wsBinary, "from"+strconv.FormatUint(step.from, 10), tok, "")
		pushes, reply := c.subscribeFrom(2, "quotes", epoch, step.from)
		checkSeqs(t, fmt.Sprintf("from %d", step.from), pushes, "t:quotes", step.from+1, reply.Seq)
		if !reply.Recovered {
			t.Fatalf("from %d: %s", step.from, describe(reply))
		}
		c.Close()
	}
}
