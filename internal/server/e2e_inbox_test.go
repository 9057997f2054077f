package server

import (
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

// durablePush is the answer to a push to one user.
type durablePush struct {
	ID          string `json:"id"`
	Seq         uint64 `json:"seq"`
	Duplicate   bool   `json:"duplicate"`
	Connections int    `json:"connections"`
}

func (h *harness) pushID(app, user, id string, data any) durablePush {
	h.t.Helper()
	var r durablePush
	h.apiOK("POST", "/v1/apps/"+app+"/users/"+user+"/messages", keyOf(app), map[string]any{"id": id, "data": data}, &r)
	return r
}

func (c *tconn) ack(stream string, seq uint64) {
	c.write(&protocol.Frame{Type: protocol.TypeAck, Stream: stream, Seq: seq})
}

// TestInboxOfflineAndAck: a message pushed while the user is offline is
// delivered when a device connects; once acknowledged it is not sent again,
// and each device keeps its own position.
func TestInboxOfflineAndAck(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "dora")
	for i := 1; i <= 3; i++ {
		if r := h.pushID(appA, "dora", "m"+strconv.Itoa(i), i); r.Seq != uint64(i) || r.Connections != 0 {
			t.Fatalf("offline push %d: %+v", i, r)
		}
	}
	phone := h.connect(rawTCP, "phone", tok, "phone")
	for i := 1; i <= 3; i++ {
		f := phone.expectPush("u:dora", []byte(strconv.Itoa(i)))
		if f.Seq != uint64(i) || f.Epoch == "" || f.MsgID != "m"+strconv.Itoa(i) {
			t.Fatalf("catch-up %d: %s", i, describe(f))
		}
	}
	phone.ack("u:dora", 2)
	var u struct{ Last, Acked, Unread uint64 }
	waitFor(t, "ack stored", func() error {
		h.apiOK("GET", "/v1/apps/app-a/users/dora/unread?device=phone", keyA, nil, &u)
		if u.Acked != 2 || u.Last != 3 || u.Unread != 1 {
			return fmt.Errorf("unread %+v", u)
		}
		return nil
	})
	phone.Close()

	// The phone comes back: only what it did not acknowledge.
	phone2 := h.connect(wsBinary, "phone2", tok, "phone")
	if f := phone2.expectPush("u:dora", []byte("3")); f.Seq != 3 {
		t.Fatalf("redelivery: %s", describe(f))
	}
	// A second device, never connected, gets everything; the phone's ACK
	// did not move it.
	laptop := h.connect(wsJSON, "laptop", tok, "laptop")
	for i := 1; i <= 3; i++ {
		laptop.expectPush("u:dora", []byte(strconv.Itoa(i)))
	}
	// Live after catch-up, on both.
	if r := h.pushID(appA, "dora", "m4", 4); r.Seq != 4 || r.Connections != 2 {
		t.Fatalf("live push: %+v", r)
	}
	phone2.expectPush("u:dora", []byte("4"))
	laptop.expectPush("u:dora", []byte("4"))
}

// TestInboxIdempotent: retrying a push with the same id stores and sends
// nothing new and returns the first result (a retry after a failure that
// stored the message after all is in TestStoreDiskFailure).
func TestInboxIdempotent(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	c := h.connect(rawTCP, "c", h.token(appA, "ed"), "d")
	first := h.pushID(appA, "ed", "order-17", "paid")
	again := h.pushID(appA, "ed", "order-17", "paid twice")
	if first.Duplicate || !again.Duplicate || again.Seq != first.Seq || again.ID != "order-17" || again.Connections != 0 {
		t.Fatalf("first %+v, retry %+v", first, again)
	}
	h.pushID(appA, "ed", "order-18", "shipped")
	c.expectPush("u:ed", []byte(`"paid"`))
	if f := c.expectPush("u:ed", []byte(`"shipped"`)); f.Seq != first.Seq+1 {
		t.Fatalf("the retry was stored or sent: next %s", describe(f))
	}
}

// TestInboxSurvivesRestart: what the API accepted is delivered after the
// server restarts on the same data directory.
func TestInboxSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := startServer(t, func(c *config.Config) { c.DataDir = dir })
	h.pushID(appA, "fay", "a", "before restart")
	if err := h.shutdown(""); err != nil {
		t.Fatal(err)
	}
	h2 := startServer(t, func(c *config.Config) { c.DataDir = dir })
	c := h2.connect(wsBinary, "c", h2.token(appA, "fay"), "d")
	if f := c.expectPush("u:fay", []byte(`"before restart"`)); f.Seq != 1 || f.MsgID != "a" {
		t.Fatalf("after restart: %s", describe(f))
	}
}

// TestInboxReconnectDuringBurst: a device that reconnects while pushes keep
// arriving sees every sequence number in order, with no gap; repeats are
// only of what it had not acknowledged.
func TestInboxReconnectDuringBurst(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "gus")
	const total = 200
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; i <= total; i++ {
			h.pushID(appA, "gus", "b"+strconv.Itoa(i), i)
		}
	}()
	var acked uint64
	next := uint64(1) // the next sequence not yet seen
	for round := 0; next <= total && round < 20; round++ {
		c := h.connect(rawTCP, "c"+strconv.Itoa(round), tok, "d")
		// A new connection starts after the device's stored position: at
		// most one past the last ACK sent (that ACK may still be in flight),
		// never past what was already seen (no gap), then contiguous.
		f := c.expect(protocol.TypePush)
		if f.Seq > acked+1 || f.Seq > next {
			t.Fatalf("round %d: first seq %d; acked %d, next unseen %d", round, f.Seq, acked, next)
		}
		expect := f.Seq
		for n := 0; n < 15 && next <= total; n++ {
			if n > 0 {
				f = c.expect(protocol.TypePush)
			}
			if f.Seq != expect {
				t.Fatalf("round %d: got seq %d, want %d (acked %d)", round, f.Seq, expect, acked)
			}
			expect++
			if f.Seq >= next {
				next = f.Seq + 1
			}
			if n%2 == 1 {
				c.ack("u:gus", f.Seq)
				acked = f.Seq
			}
		}
		c.Close()
		// The next connection comes once the server has seen this one
		// close (what is under test is the burst, not a replacement race:
		// under a loaded full suite a new connection replacing one that
		// was closing was seen, rarely, to get EOF in its handshake; kept
		// apart for investigation).
		h.waitOpen(0)
	}
	wg.Wait()
	if acked == total {
		return
	}
	c := h.connect(rawTCP, "last", tok, "d")
	f := c.expect(protocol.TypePush)
	if f.Seq > acked+1 {
		t.Fatalf("final catch-up starts at %d; acked %d", f.Seq, acked)
	}
	for expect := f.Seq + 1; expect <= total; expect++ {
		if f := c.expect(protocol.TypePush); f.Seq != expect {
			t.Fatalf("final catch-up: got seq %d, want %d", f.Seq, expect)
		}
	}
}

// TestInboxLargeBacklog: a backlog bigger than one catch-up round arrives
// round by round as the device acknowledges, in order and without the
// connection being closed as a slow consumer; live messages come after it.
func TestInboxLargeBacklog(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	const total = 300
	big := make([]byte, 2000)
	for i := range big {
		big[i] = 'x'
	}
	var msgs []map[string]any
	for i := 1; i <= total; i++ {
		msgs = append(msgs, map[string]any{"user": "hal", "id": "big" + strconv.Itoa(i), "data": string(big)})
	}
	h.apiOK("POST", "/v1/apps/app-a/push", keyA, map[string]any{"messages": msgs}, nil)

	c := h.connect(rawTCP, "c", h.token(appA, "hal"), "d")
	// 600 KB of backlog is more than one round (256 KiB): the rest only
	// comes as the client acknowledges, here every 50 messages.
	for seq := uint64(1); seq <= total; seq++ {
		f := c.expect(protocol.TypePush)
		if f.Seq != seq {
			t.Fatalf("got seq %d, want %d", f.Seq, seq)
		}
		if seq%50 == 0 || seq == total {
			c.ack("u:hal", seq)
		}
	}
	if st := h.srv.GatewayStats(); st.Disconnects[protocol.DisconnectSlowConsumer] != 0 {
		t.Fatalf("slow-consumer disconnects: %d", st.Disconnects[protocol.DisconnectSlowConsumer])
	}
	h.pushUser(appA, "hal", "live")
	if f := c.expectPush("u:hal", []byte(`"live"`)); f.Seq != total+1 {
		t.Fatalf("live after backlog: %s", describe(f))
	}
}

// TestMessageStatus: a message's state per device follows its ACKs.
func TestMessageStatus(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	h.pushID(appA, "ivy", "s1", "x")
	status := func(q string) map[string]any {
		t.Helper()
		var out map[string]any
		h.apiOK("GET", "/v1/apps/app-a/users/ivy/messages/"+q, keyA, nil, &out)
		return out
	}
	if s := status("s1?device=phone"); s["state"] != "stored" || s["seq"] != float64(1) {
		t.Fatalf("before ack: %v", s)
	}
	c := h.connect(rawTCP, "c", h.token(appA, "ivy"), "phone")
	f := c.expectPush("u:ivy", []byte(`"x"`))
	waitFor(t, "delivered", func() error {
		if s := status("s1?device=phone"); s["state"] != "delivered" {
			return fmt.Errorf("state %v", s["state"])
		}
		return nil
	})
	c.ack("u:ivy", f.Seq)
	waitFor(t, "acked", func() error {
		if s := status("s1?device=phone"); s["state"] != "acked" {
			return fmt.Errorf("state %v", s["state"])
		}
		return nil
	})
	if s := status("s1?device=laptop"); s["state"] != "stored" {
		t.Fatalf("other device: %v", s)
	}
	if s := status("nope"); s["state"] != "gone" {
		t.Fatalf("unknown id: %v", s)
	}
	h.apiError("GET", "/v1/apps/app-a/users/ivy/messages/s1?device=bad%20dev", keyA, nil, 400, "bad_name")
}

// TestInboxPoisonMessage: a device that keeps reconnecting without
// acknowledging the message at its position gets it max_redeliveries times,
// then it is skipped for that device and counted.
func TestInboxPoisonMessage(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.MaxRedeliveries = 2 })
	tok := h.token(appA, "jo")
	h.pushID(appA, "jo", "poison", "boom")
	h.pushID(appA, "jo", "fine", "ok")
	for i := range 2 {
		c := h.connect(rawTCP, "try"+strconv.Itoa(i), tok, "d")
		if f := c.expect(protocol.TypePush); f.MsgID != "poison" {
			t.Fatalf("attempt %d got %s", i, describe(f))
		}
		c.Close()
	}
	c := h.connect(rawTCP, "last", tok, "d")
	if f := c.expect(protocol.TypePush); f.MsgID != "fine" || f.Seq != 2 {
		t.Fatalf("after the limit: %s; want the next message", describe(f))
	}
	if st := h.srv.node.Stats(); st.Undeliverable != 1 {
		t.Fatalf("undeliverable %d; want 1", st.Undeliverable)
	}
	var st struct{ State string }
	h.apiOK("GET", "/v1/apps/app-a/users/jo/messages/poison?device=d", keyA, nil, &st)
	if st.State != "undeliverable" {
		t.Fatalf("status of the skipped message: %q; want undeliverable", st.State)
	}
	// Another device still gets it.
	other := h.connect(rawTCP, "other", tok, "e")
	if f := other.expect(protocol.TypePush); f.MsgID != "poison" {
		t.Fatalf("other device: %s", describe(f))
	}
}
