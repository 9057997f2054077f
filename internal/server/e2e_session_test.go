package server

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

// TestTenancy checks that a user of app A never receives what app B sends
// to a user, topic or broadcast of the same name.
func TestTenancy(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	aliceA := h.connect(wsBinary, "aliceA", h.token(appA, "alice", "*"), "phone")
	aliceB := h.connect(rawTCP, "aliceB", h.token(appB, "alice", "*"), "phone")
	aliceA.subscribe(1, "news")
	aliceB.subscribe(1, "news")

	// Push to B's alice. Pushes to a user are written before the API
	// answers, so a later push to A's alice reaches her after anything
	// sent to her before.
	if r := h.pushUser(appB, "alice", "for B"); r.Connections != 1 {
		t.Fatalf("push to app B's alice: %+v; want 1 connection", r)
	}
	aliceB.expectPush("u:alice", []byte(`"for B"`))
	h.pushUser(appA, "alice", "for A")
	aliceA.expectPush("u:alice", []byte(`"for A"`))

	// Publish and broadcast in B. With one fan-out worker the passes run in
	// publishing order, so A's own broadcast comes first for A's alice.
	if r := h.publish(appB, "news", "B news"); r.Subscribers != 1 {
		t.Fatalf("publish in app B: %+v; want 1 subscriber", r)
	}
	if r := h.broadcast(appB, "B all"); r.Connections != 1 {
		t.Fatalf("broadcast in app B: %+v; want 1 connection", r)
	}
	aliceB.expectPush("t:news", []byte(`"B news"`))
	aliceB.expectPush("b", []byte(`"B all"`))
	h.broadcast(appA, "A all")
	aliceA.expectPush("b", []byte(`"A all"`))

	// Presence, too, is per app.
	if p := h.presence(appA, "alice"); len(p.Devices) != 1 || p.Devices[0].Transport != "ws" {
		t.Fatalf("app A's presence of alice: %+v; want her one ws device", p)
	}
	// Kicking B's alice leaves A's alone.
	h.apiOK("POST", "/v1/apps/app-b/users/alice/kick", keyB, nil, nil)
	aliceB.expectDisconnect(protocol.DisconnectKicked)
	aliceA.ping(99)
}

// TestTopicPatterns checks that a token's topic patterns restrict
// SUBSCRIBE, that a refusal names the request and leaves the connection
// open, and that the connection keeps receiving.
func TestTopicPatterns(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			h := h.withT(t)
			user := "u-" + tr.name
			c := h.connect(tr, "c", h.token(appA, user, "news.*", "alerts"), "d")
			c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 7, Topic: "sports"})
			c.expectError(protocol.CodeForbidden, 7)
			c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 8, Topic: "news."}) // "news.*" needs something after the dot
			c.expectError(protocol.CodeForbidden, 8)
			c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 9, Topic: "bad topic"})
			c.expectError(protocol.CodeBadName, 9)
			c.subscribe(10, "news.eu")
			c.subscribe(11, "alerts")
			c.subscribe(12, "news.eu") // again: answered, not doubled

			if r := h.publish(appA, "sports", 1); r.Subscribers != 0 {
				t.Fatalf("sports has %d subscribers; want 0", r.Subscribers)
			}
			h.publish(appA, "news.eu", "eu")
			h.publish(appA, "alerts", "alert")
			c.expectPush("t:news.eu", []byte(`"eu"`))
			c.expectPush("t:alerts", []byte(`"alert"`))
			h.pushUser(appA, user, "direct")
			c.expectPush("u:"+user, []byte(`"direct"`))

			// A token without topics allows none.
			n := h.connect(tr, "none", h.token(appA, user+"-none"), "d")
			n.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "news.eu"})
			n.expectError(protocol.CodeForbidden, 1)
			n.ping(5)
		})
	}
}

// TestBadTokens checks that a refused token gets ERROR 2004 or 2005, then
// DISCONNECT 3007 without reconnect advice, and the connection closed.
func TestBadTokens(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	now := time.Now()
	cases := []struct {
		name  string
		token string
		code  protocol.ErrorCode
	}{
		{"garbage", "not-a-token", protocol.CodeBadToken},
		{"garbage jwt", "eyJhbGciOiJIUzI1NiJ9.e30.AAAA", protocol.CodeBadToken},
		{"wrong secret", mint(t, appA, "wrong-secret-0123456789", "alice", nil, time.Hour, now), protocol.CodeBadToken},
		{"other app's secret", mint(t, appA, secretB, "alice", nil, time.Hour, now), protocol.CodeBadToken},
		{"unknown app", mint(t, "app-z", "secret-of-app-z-0123456789", "alice", nil, time.Hour, now), protocol.CodeBadToken},
		{"expired", mint(t, appA, secretA, "alice", nil, time.Minute, now.Add(-time.Hour)), protocol.CodeTokenExpired},
	}
	n := 0
	for _, tr := range allTransports {
		for _, tc := range cases {
			n++
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				h := h.withT(t)
				c := h.dial(tr, tc.name)
				_, err := c.handshake(tc.token, "d")
				pe, d, hasD := asRefusal(err)
				if pe == nil || pe.Code != tc.code || !hasD || d.Code != protocol.DisconnectAuthFailed || d.Reconnect {
					t.Fatalf("handshake error %v; want ERROR %d then DISCONNECT %d without reconnect", err, tc.code, protocol.DisconnectAuthFailed)
				}
				c.expectClosed()
			})
		}
	}
	h.waitDisconnects(protocol.DisconnectAuthFailed, uint64(n))
	if s := h.srv.node.Stats(); s.Sessions != 0 {
		t.Fatalf("%d sessions after refused tokens", s.Sessions)
	}
}

// TestAuthTimeout checks that a connection that does not authenticate in
// time is closed: with DISCONNECT 3006 once it is a protocol connection,
// and without a word while it is still an HTTP connection.
func TestAuthTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	h := startServer(t, func(c *config.Config) { c.AuthTimeout = timeout })
	t.Run("group", func(t *testing.T) {
		for _, tr := range []transport{wsBinary, rawTCP} {
			t.Run(tr.name, func(t *testing.T) {
				t.Parallel()
				h := h.withT(t)
				start := time.Now()
				c := h.dial(tr, "silent")
				c.expectDisconnect(protocol.DisconnectAuthTimeout)
				if el := time.Since(start); el < timeout-50*time.Millisecond {
					t.Fatalf("closed after %v; the auth timeout is %v", el, timeout)
				}
			})
		}
		t.Run("ws before upgrade", func(t *testing.T) {
			t.Parallel()
			nc, err := net.DialTimeout("tcp", h.srv.gw.WSAddr().String(), waitTime)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			start := time.Now()
			_ = nc.SetReadDeadline(time.Now().Add(waitTime))
			n, err := nc.Read(make([]byte, 1))
			var ne net.Error
			if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
				t.Fatalf("read %d bytes, err %v; want the server to close the connection", n, err)
			}
			if el := time.Since(start); el < timeout-50*time.Millisecond {
				t.Fatalf("closed after %v; the auth timeout is %v", el, timeout)
			}
		})
	})
	h.waitDisconnects(protocol.DisconnectAuthTimeout, 2)
	// A connection that authenticates in time is not touched, even when it
	// lives longer than the auth timeout.
	c := h.connect(wsJSON, "quick", h.token(appA, "alice"), "d")
	for i := range 4 {
		<-time.After(timeout / 2) // let the auth timeout pass; nothing to synchronise with
		c.ping(int64(i + 1))
	}
	h.pushUser(appA, "alice", "ok")
	c.expectPush("u:alice", []byte(`"ok"`))
	if n := h.srv.GatewayStats().Disconnects[protocol.DisconnectAuthTimeout]; n != 2 {
		t.Fatalf("%d auth timeouts counted; want 2", n)
	}
}

// TestConnectFirst checks the handshake rules: a frame other than CONNECT
// first is fatal (2003), PING is answered before CONNECT, an unknown
// protocol version is fatal (2002), a second CONNECT is not (1000).
func TestConnectFirst(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	for _, tr := range allTransports {
		t.Run(tr.name, func(t *testing.T) {
			h := h.withT(t)
			for _, typ := range []protocol.Type{protocol.TypeSubscribe, protocol.TypeAck, protocol.TypeUplink, protocol.TypeDisconnect} {
				c := h.dial(tr, "early-"+typ.String())
				c.write(&protocol.Frame{Type: typ, ID: 3, Topic: "news", Stream: "u:x", Seq: 1})
				c.expectError(protocol.CodeNotAuthenticated, 0)
				c.expectDisconnect(protocol.DisconnectProtocolError)
			}

			c := h.dial(tr, "ping-first")
			c.ping(42)
			if _, err := c.handshake(h.token(appA, "pinger"), "d"); err != nil {
				t.Fatalf("handshake after PING: %v", err)
			}
			c.write(&protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: h.token(appA, "pinger")})
			c.expectError(protocol.CodeBadRequest, 0)
			c.ping(43) // still open

			v := h.dial(tr, "future")
			v.write(&protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version + 1, Token: h.token(appA, "future")})
			v.expectError(protocol.CodeUnsupportedVersion, 0)
			v.expectDisconnect(protocol.DisconnectProtocolError)
		})
	}
}

// TestDuplicateLogin checks both duplicate-login policies.
func TestDuplicateLogin(t *testing.T) {
	t.Parallel()
	t.Run("replace", func(t *testing.T) {
		t.Parallel()
		h := startServer(t)
		tok := h.token(appA, "alice")
		old := h.connect(wsBinary, "old", tok, "phone")
		other := h.connect(wsJSON, "other", tok, "laptop")
		if r := h.pushUser(appA, "alice", "both"); r.Connections != 2 {
			t.Fatalf("push to two devices: %+v", r)
		}
		old.expectPush("u:alice", []byte(`"both"`))
		other.expectPush("u:alice", []byte(`"both"`))

		newer := h.connect(rawTCP, "new", tok, "phone")
		old.expectDisconnect(protocol.DisconnectReplaced)
		h.waitDisconnects(protocol.DisconnectReplaced, 1)
		if r := h.pushUser(appA, "alice", "after"); r.Connections != 2 {
			t.Fatalf("push after replacing: %+v; want 2 connections", r)
		}
		// The device never acknowledged "both": its new connection gets it
		// again (from the inbox) before the live message.
		newer.expectPush("u:alice", []byte(`"both"`))
		newer.expectPush("u:alice", []byte(`"after"`))
		other.expectPush("u:alice", []byte(`"after"`))
		p := h.presence(appA, "alice")
		if len(p.Devices) != 2 || p.Devices[0].Device != "laptop" || p.Devices[1].Device != "phone" || p.Devices[1].Transport != "tcp" {
			t.Fatalf("presence after replacing: %+v", p)
		}
	})
	t.Run("refuse", func(t *testing.T) {
		t.Parallel()
		h := startServer(t, func(c *config.Config) { c.DuplicateLogin = config.DuplicateRefuse })
		tok := h.token(appA, "alice")
		old := h.connect(rawTCP, "old", tok, "phone")
		for _, tr := range allTransports {
			c := h.dial(tr, "newer")
			_, err := c.handshake(tok, "phone")
			_, d, hasD := asRefusal(err)
			if !hasD || d.Code != protocol.DisconnectDuplicateRefused || d.Reconnect {
				t.Fatalf("%s: handshake error %v; want DISCONNECT %d", tr.name, err, protocol.DisconnectDuplicateRefused)
			}
			c.expectClosed()
		}
		if r := h.pushUser(appA, "alice", "still"); r.Connections != 1 {
			t.Fatalf("push after refusals: %+v; want 1 connection", r)
		}
		old.expectPush("u:alice", []byte(`"still"`))
		h.waitDisconnects(protocol.DisconnectDuplicateRefused, 3)
		// Once the older connection is gone, the device may log in again.
		_ = old.Close()
		waitFor(t, "the old session to end", func() error {
			if p := h.presence(appA, "alice"); p.Online {
				return fmt.Errorf("presence %+v", p)
			}
			return nil
		})
		h.connect(wsBinary, "again", tok, "phone")
	})
}

// TestIdleTimeout checks that a silent client is closed after heartbeat +
// grace with DISCONNECT 3005, and that one that PINGs is not.
func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	const hb, grace = 200 * time.Millisecond, 200 * time.Millisecond
	h := startServer(t, func(c *config.Config) {
		c.Heartbeat, c.HeartbeatGrace, c.AuthTimeout = hb, grace, hb
	})
	tok := h.token(appA, "alice")
	silentWS := h.connect(wsBinary, "silent", tok, "s1")
	silentTCP := h.connect(rawTCP, "silent", tok, "s2")
	connected := time.Now()
	pingers := []*tconn{h.connect(wsJSON, "pinger", tok, "p1"), h.connect(rawTCP, "pinger", tok, "p2")}

	// PING every hb/2 for at least three idle periods, and until both
	// silent clients are gone.
	tick := time.NewTicker(hb / 2)
	defer tick.Stop()
	var closedAfter time.Duration
	for i := int64(1); ; i++ {
		for _, p := range pingers {
			p.ping(i)
		}
		if closedAfter == 0 && h.srv.GatewayStats().Disconnects[protocol.DisconnectIdleTimeout] >= 2 {
			closedAfter = time.Since(connected)
		}
		if closedAfter > 0 && time.Since(connected) > 3*(hb+grace) {
			break
		}
		if time.Since(connected) > waitTime {
			t.Fatalf("silent clients not closed within %v", waitTime)
		}
		<-tick.C
	}
	if closedAfter < hb+grace-100*time.Millisecond {
		t.Fatalf("silent clients closed %v after connecting; heartbeat + grace is %v", closedAfter, hb+grace)
	}
	silentWS.expectDisconnect(protocol.DisconnectIdleTimeout)
	silentTCP.expectDisconnect(protocol.DisconnectIdleTimeout)
	if r := h.pushUser(appA, "alice", "alive"); r.Connections != 2 {
		t.Fatalf("push to the pingers: %+v; want 2 connections", r)
	}
	for _, p := range pingers {
		p.expectPush("u:alice", []byte(`"alive"`))
	}
	if n := h.srv.GatewayStats().Disconnects[protocol.DisconnectIdleTimeout]; n != 2 {
		t.Fatalf("%d idle timeouts; want 2", n)
	}
}

// TestGracefulShutdown checks that Shutdown tells every client to
// reconnect to the alternate address, closes everything and leaks no
// goroutine. It does not run in parallel, so that the goroutine check sees
// only its own server.
func TestGracefulShutdown(t *testing.T) {
	before := goleak.IgnoreCurrent()
	func() {
		h := startServer(t)
		var conns []*tconn
		for _, tr := range allTransports {
			c := h.connect(tr, "c", h.token(appA, "user-"+tr.name, "*"), "d")
			c.subscribe(1, "news")
			conns = append(conns, c)
		}
		unauth := h.dial(rawTCP, "unauthenticated")
		sse := h.sseConnect("c", h.token(appA, "user-sse", "*"), "d")
		sse.subscribe(protocol.Frame{ID: 1, Topic: "news"})
		h.waitOpen(5)

		const alt = "127.0.0.1:9"
		done := make(chan error, 1)
		go func() { done <- h.shutdown(alt) }()
		for _, c := range append(conns, unauth) {
			if d := c.expectDisconnect(protocol.DisconnectShutdown); d.Alt != alt || !d.Reconnect {
				t.Fatalf("%s: DISCONNECT %+v; want reconnect to %s", c.name, d, alt)
			}
		}
		if d := sse.expectDisconnect(protocol.DisconnectShutdown); d.Alt != alt || !d.Reconnect {
			t.Fatalf("%s: DISCONNECT %+v; want reconnect to %s", sse.name, d, alt)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
		case <-time.After(waitTime):
			t.Fatalf("Shutdown did not return within %v", waitTime)
		}
		h.waitDisconnects(protocol.DisconnectShutdown, 5)
		// Nothing listens any more.
		for _, addr := range []string{h.srv.gw.WSAddr().String(), h.srv.TCPAddr(), h.srv.apiLn.Addr().String()} {
			if nc, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				nc.Close()
				t.Errorf("%s still accepts connections after Shutdown", addr)
			}
		}
		if _, err := (&http.Client{Timeout: time.Second}).Get(h.srv.APIURL() + "/healthz"); err == nil {
			t.Errorf("the API still answers after Shutdown")
		}
		for _, c := range append(conns, unauth) {
			_ = c.Close()
		}
		sse.Close()
	}()
	goleak.VerifyNone(t, before)
}
