package server

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

// TestSSEPushAndAck connects over SSE, gets a push, acknowledges it with a
// POST, and checks that the next connection of the device starts after it;
// the node sees the connection as transport "sse".
func TestSSEPushAndAck(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "alice")
	c := h.sseConnect("alice", tok, "browser")

	if p := h.presence(appA, "alice"); len(p.Devices) != 1 || p.Devices[0].Transport != "sse" {
		t.Fatalf("presence = %+v; want one sse device", p)
	}

	if r := h.pushUser(appA, "alice", map[string]int{"n": 1}); r.Connections != 1 {
		t.Fatalf("push: %+v; want 1 connection", r)
	}
	p1 := c.expectPush("u:alice", []byte(`{"n":1}`))
	c.write(&protocol.Frame{Type: protocol.TypeAck, Stream: p1.Stream, Seq: p1.Seq})
	// PING after the ACK: its PONG proves the ACK was handled first.
	c.write(&protocol.Frame{Type: protocol.TypePing, Time: 7})
	if f := c.expect(protocol.TypePong); f.Time != 7 {
		t.Fatalf("PONG time %d; want 7", f.Time)
	}
	h.pushUser(appA, "alice", map[string]int{"n": 2})
	c.expectPush("u:alice", []byte(`{"n":2}`))
	c.write(&protocol.Frame{Type: protocol.TypeDisconnect, Code: uint32(protocol.DisconnectNormal)})
	c.expectDisconnect(protocol.DisconnectNormal)

	// Only the unacknowledged message comes again.
	c2 := h.sseConnect("alice again", tok, "browser")
	c2.expectPush("u:alice", []byte(`{"n":2}`))
	c2.write(&protocol.Frame{Type: protocol.TypePing, Time: 8})
	c2.expect(protocol.TypePong)
}

// TestSSESubscribeRecovery subscribes over SSE, drops the stream, and
// recovers what was published meanwhile with a SUBSCRIBE from its position.
func TestSSESubscribeRecovery(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "bob", "news")
	c := h.sseConnect("bob", tok, "d1")
	c.subscribe(protocol.Frame{ID: 1, Topic: "news"})
	h.publish(appA, "news", "one")
	last := c.expectPush("t:news", []byte(`"one"`))
	c.Close()
	h.waitOpen(0)

	h.publish(appA, "news", "two")
	h.publish(appA, "news", "three")
	c2 := h.sseConnect("bob again", tok, "d1")
	reply := c2.subscribe(protocol.Frame{ID: 2, Topic: "news", Epoch: last.Epoch, Seq: last.Seq})
	if !reply.Recovered {
		t.Fatalf("REPLY %s; want recovered", describe(reply))
	}
	c2.expectPush("t:news", []byte(`"two"`))
	c2.expectPush("t:news", []byte(`"three"`))
	h.publish(appA, "news", "four")
	c2.expectPush("t:news", []byte(`"four"`))
}

// TestSSETLS runs a session over SSE on a TLS listener: the stream and the
// POSTs are encrypted on the event loop like WebSocket's.
func TestSSETLS(t *testing.T) {
	t.Parallel()
	h := startServer(t, withTLS(t))
	c := h.sseConnect("tls", h.token(appA, "tess", "news"), "d1")
	c.subscribe(protocol.Frame{ID: 1, Topic: "news"})
	h.publish(appA, "news", "secret")
	c.expectPush("t:news", []byte(`"secret"`))
	h.pushUser(appA, "tess", "inbox")
	p := c.expectPush("u:tess", []byte(`"inbox"`))
	c.write(&protocol.Frame{Type: protocol.TypeAck, Stream: p.Stream, Seq: p.Seq})
	c.write(&protocol.Frame{Type: protocol.TypeDisconnect, Code: uint32(protocol.DisconnectNormal)})
	c.expectDisconnect(protocol.DisconnectNormal)
}

// TestSSEBatch sends several frames in one POST (a JSON array) and gets
// their answers in order.
func TestSSEBatch(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	c := h.sseConnect("carol", h.token(appA, "carol"), "d1")
	status, body, err := c.post([]byte(`[{"type":"ping","time":1},{"type":"ping","time":2}]`))
	if err != nil || status != http.StatusNoContent {
		t.Fatalf("batch POST: %d %s %v", status, body, err)
	}
	for _, want := range []int64{1, 2} {
		if f := c.expect(protocol.TypePong); f.Time != want {
			t.Fatalf("PONG time %d; want %d", f.Time, want)
		}
	}
}

// TestSSEHeartbeat checks that an SSE connection that PINGs stays and a
// silent one is closed with DISCONNECT idle timeout.
func TestSSEHeartbeat(t *testing.T) {
	t.Parallel()
	const hb, grace = 300 * time.Millisecond, 300 * time.Millisecond
	h := startServer(t, func(c *config.Config) { c.Heartbeat, c.HeartbeatGrace, c.AuthTimeout = hb, grace, hb })
	tok := h.token(appA, "dave")
	silent := h.sseConnect("silent", tok, "s")
	pinger := h.sseConnect("pinger", tok, "p")
	start := time.Now()
	tick := time.NewTicker(hb / 3)
	defer tick.Stop()
	for i := int64(1); h.srv.GatewayStats().Disconnects[protocol.DisconnectIdleTimeout] == 0; i++ {
		if time.Since(start) > waitTime {
			t.Fatalf("the silent stream was not closed within %v", waitTime)
		}
		pinger.write(&protocol.Frame{Type: protocol.TypePing, Time: i})
		if f := pinger.expect(protocol.TypePong); f.Time != i {
			t.Fatalf("PONG %d; want %d", f.Time, i)
		}
		<-tick.C
	}
	if el := time.Since(start); el < hb+grace-100*time.Millisecond {
		t.Fatalf("closed after %v; heartbeat + grace is %v", el, hb+grace)
	}
	silent.expectDisconnect(protocol.DisconnectIdleTimeout)
	pinger.write(&protocol.Frame{Type: protocol.TypePing, Time: 99})
	pinger.expect(protocol.TypePong)
}

// TestSSEAuthTimeout checks that a stream that sends no CONNECT in time is
// ended with DISCONNECT auth timeout, and its session is gone.
func TestSSEAuthTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	h := startServer(t, func(c *config.Config) { c.AuthTimeout = timeout })
	start := time.Now()
	c := h.sseDial("silent")
	c.expectDisconnect(protocol.DisconnectAuthTimeout)
	if el := time.Since(start); el < timeout-50*time.Millisecond {
		t.Fatalf("closed after %v; the auth timeout is %v", el, timeout)
	}
	h.waitOpen(0)
	status, body, err := c.post(protocol.AppendJSON(nil, &protocol.Frame{Type: protocol.TypePing}))
	wantAPIError(t, "POST after the stream ended", status, body, err, http.StatusNotFound, "unknown_session")
}

// TestSSEBadRequests checks what bad input gets, and that it touches
// nobody else.
func TestSSEBadRequests(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.MaxConnectSize = 1024 })
	tok := h.token(appA, "erin")
	bystander := h.sseConnect("bystander", tok, "b")
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()

	t.Run("unknown session", func(t *testing.T) {
		for _, p := range []string{"/sse/nope", "/sse/" + strings.Repeat("A", 32), "/sse/"} {
			status, body, err := ssePost(hc, "http://"+h.srv.gw.WSAddr().String()+p, "", []byte(`{"type":"ping"}`))
			wantAPIError(t, "POST "+p, status, body, err, http.StatusNotFound, "unknown_session")
		}
	})
	t.Run("first frame not connect", func(t *testing.T) {
		c := h.sseDial("eager")
		c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "news"})
		f := c.expect(protocol.TypeError)
		if protocol.ErrorCode(f.Code) != protocol.CodeNotAuthenticated {
			t.Fatalf("got %s; want ERROR not authenticated", describe(f))
		}
		c.expectDisconnect(protocol.DisconnectProtocolError)
	})
	t.Run("malformed", func(t *testing.T) {
		c := h.sseConnect("garbler", tok, "g")
		status, body, err := c.post([]byte(`{"type":`))
		wantAPIError(t, "malformed POST", status, body, err, http.StatusBadRequest, "malformed")
		c.expectError(protocol.CodeMalformed)
		c.expectDisconnect(protocol.DisconnectProtocolError)
	})
	t.Run("too large before connect", func(t *testing.T) {
		c := h.sseDial("big")
		big := protocol.AppendJSON(nil, &protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: strings.Repeat("x", 2000)})
		status, body, err := c.post(big)
		wantAPIError(t, "large POST", status, body, err, http.StatusRequestEntityTooLarge, "too_large")
		c.expectError(protocol.CodeTooLarge)
		c.expectDisconnect(protocol.DisconnectProtocolError)
	})
	t.Run("get with a method other than GET", func(t *testing.T) {
		status, body, err := ssePost(hc, h.sseURL(), "", nil)
		wantAPIError(t, "POST /sse", status, body, err, http.StatusMethodNotAllowed, "method_not_allowed")
	})
	bystander.write(&protocol.Frame{Type: protocol.TypePing, Time: 5})
	if f := bystander.expect(protocol.TypePong); f.Time != 5 {
		t.Fatalf("bystander PONG %d", f.Time)
	}
}

// expectError reads an ERROR with code.
func (c *sconn) expectError(code protocol.ErrorCode) {
	c.t.Helper()
	f := c.expect(protocol.TypeError)
	if protocol.ErrorCode(f.Code) != code {
		c.t.Fatalf("%s: got %s; want ERROR %d", c.name, describe(f), code)
	}
}

// TestSSEOrigins checks allowed origins on the event stream and the POSTs.
func TestSSEOrigins(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.WS.AllowedOrigins = []string{"https://app.example.com"} })
	_, err := h.sseOpen("evil", "https://evil.example.com")
	wantAPIError(t, "stream from another origin", 0, nil, err, http.StatusForbidden, "origin_not_allowed")

	c, err := h.sseOpen("app", "https://app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	status, body, err := ssePost(c.http, c.base+c.path, "https://evil.example.com", protocol.AppendJSON(nil, &protocol.Frame{Type: protocol.TypePing}))
	wantAPIError(t, "POST from another origin", status, body, err, http.StatusForbidden, "origin_not_allowed")
	c.write(&protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: h.token(appA, "frank"), Device: "d"})
	c.expect(protocol.TypeConnected)
	if n := h.srv.GatewayStats().OriginRefused; n != 2 {
		t.Fatalf("OriginRefused = %d; want 2", n)
	}
}

// TestSSESlowConsumer checks that a stream nobody reads is closed as a slow
// consumer once its outbound queue is full, and that its session is gone.
func TestSSESlowConsumer(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) {
		c.MaxFrameSize, c.MaxPayload, c.OutboundLimit = 64<<10, 32<<10, 128<<10
	})
	const topic = "feed"
	// The slow consumer: a raw socket with a small receive buffer that
	// reads the response up to the session event and then stops reading.
	nc, err := net.DialTimeout("tcp", h.srv.gw.WSAddr().String(), waitTime)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetDeadline(time.Now().Add(waitTime))
	if _, err := io.WriteString(nc, "GET /sse HTTP/1.1\r\nHost: herald\r\nAccept: text/event-stream\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	var path string
	for path == "" {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream's head: %v", err)
		}
		if rest, ok := strings.CutPrefix(line, "data: "); ok {
			var first struct{ Path string }
			if err := json.Unmarshal([]byte(rest), &first); err != nil {
				t.Fatalf("session event %q: %v", rest, err)
			}
			path = first.Path
		}
	}
	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	base := "http://" + h.srv.gw.WSAddr().String()
	for _, f := range []*protocol.Frame{
		{Type: protocol.TypeConnect, Version: protocol.Version, Token: h.token(appA, "slow", topic), Device: "d"},
		{Type: protocol.TypeSubscribe, ID: 1, Topic: topic},
	} {
		if status, body, err := ssePost(hc, base+path, "", protocol.AppendJSON(nil, f)); err != nil || status != http.StatusNoContent {
			t.Fatalf("POST %s: %d %s %v", f.Type, status, body, err)
		}
	}
	waitFor(t, "the subscription", func() error {
		if r := h.publish(appA, topic, "hello"); r.Subscribers != 1 {
			return fmt.Errorf("%d subscribers", r.Subscribers)
		}
		return nil
	})
	pad := strings.Repeat("x", 30<<10)
	for sent := 0; h.srv.GatewayStats().Disconnects[protocol.DisconnectSlowConsumer] == 0; sent++ {
		if sent == 3000 {
			t.Fatalf("the slow stream is still open after %d messages", sent)
		}
		h.publish(appA, topic, pad)
	}
	h.waitOpen(0)
	status, body, err := ssePost(hc, base+path, "", []byte(`{"type":"ping"}`))
	wantAPIError(t, "POST to the closed session", status, body, err, http.StatusNotFound, "unknown_session")
}
