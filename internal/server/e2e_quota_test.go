package server

// End-to-end tests of quotas and protection (issue 12 item 5): per-app API
// and publish rates, per-app connection limits, per-address connection rate
// and flap bans, address allow and deny lists, and overload refusal. Client
// source addresses are chosen among 127.0.0.0/8 (all loopback on Linux).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/protocol"
)

// apiCallHeader is apiCall that also returns the response headers.
func (h *harness) apiCallHeader(method, path, key string, body string) (int, http.Header, []byte) {
	h.t.Helper()
	var b any
	if body != "" {
		b = body
	}
	return h.apiDo(method, path, key, b)
}

// errorCode returns the code of a JSON error body.
func errorCode(body []byte) string {
	var e struct {
		Error struct {
			Code, Message string
		}
	}
	_ = json.Unmarshal(body, &e)
	return e.Error.Code
}

// checkRetryAfter fails unless hdr has a Retry-After of 1 to max seconds.
func checkRetryAfter(t testing.TB, hdr http.Header, maxSeconds int) {
	t.Helper()
	n, err := strconv.Atoi(hdr.Get("Retry-After"))
	if err != nil || n < 1 || n > maxSeconds {
		t.Fatalf("Retry-After %q; want 1 to %d seconds", hdr.Get("Retry-After"), maxSeconds)
	}
}

func TestAPIRateLimit(t *testing.T) {
	h := startServer(t, func(c *config.Config) {
		c.Apps[0].Limits = config.AppLimits{APIRate: 1, APIBurst: 3}
	})
	presence := "/v1/apps/" + appA + "/users/alice/presence"
	ok, limited := 0, false
	for i := 0; i < 20 && !limited; i++ { // a burst of 3 at 1/s: the 4th or so is refused
		status, hdr, body := h.apiCallHeader("GET", presence, keyA, "")
		switch status {
		case http.StatusOK:
			ok++
		case http.StatusTooManyRequests:
			if code := errorCode(body); code != "rate_limited" {
				t.Fatalf("429 with code %q: %s", code, body)
			}
			checkRetryAfter(t, hdr, 1)
			limited = true
		default:
			t.Fatalf("status %d: %s", status, body)
		}
	}
	if !limited || ok < 3 {
		t.Fatalf("%d requests passed, limited %v; want the burst of 3 to pass, then 429", ok, limited)
	}
	// The other app is unaffected.
	for i := 0; i < 20; i++ {
		if status, _, body := h.apiCallHeader("GET", "/v1/apps/"+appB+"/users/bob/presence", keyB, ""); status != http.StatusOK {
			t.Fatalf("app-b request %d: status %d: %s", i, status, body)
		}
	}
	// The 429s are counted per app.
	if rl := h.srv.api.RateLimited(); rl[appA].API < 1 || rl[appB].API != 0 {
		t.Fatalf("rate limited counts %+v", rl)
	}
	_, _, metrics := h.apiCallHeader("GET", "/metrics", "", "")
	if !strings.Contains(string(metrics), `herald_api_rate_limited_total{app="app-a",limit="api"}`) {
		t.Fatalf("metrics lack herald_api_rate_limited_total for app-a")
	}
}

func TestPublishRateLimit(t *testing.T) {
	h := startServer(t, func(c *config.Config) {
		c.Apps[0].Limits = config.AppLimits{PublishRate: 1, PublishBurst: 5}
	})
	// A client of app-b sees its app's broadcasts while app-a is limited.
	bob := h.connect(wsBinary, "bob", h.token(appB, "bob"), "phone")

	bulk := func(n int) string {
		msgs := make([]string, n)
		for i := range msgs {
			msgs[i] = fmt.Sprintf(`{"user":"u%d","data":{"i":%d}}`, i, i)
		}
		return `{"messages":[` + strings.Join(msgs, ",") + `]}`
	}
	if status, _, body := h.apiCallHeader("POST", "/v1/apps/"+appA+"/push", keyA, bulk(4)); status != http.StatusOK {
		t.Fatalf("bulk of 4 within the burst of 5: status %d: %s", status, body)
	}
	// 4 of 5 taken: a bulk of 4 more counts each message and is refused,
	// whole, unless 3 seconds went by.
	status, hdr, body := h.apiCallHeader("POST", "/v1/apps/"+appA+"/push", keyA, bulk(4))
	if status != http.StatusTooManyRequests || errorCode(body) != "publish_rate_limited" {
		t.Fatalf("second bulk: status %d: %s; want 429 publish_rate_limited", status, body)
	}
	checkRetryAfter(t, hdr, 4)
	// Single publishes are counted too; one passes at most once a second,
	// so of a quick run of them some are refused.
	refused := 0
	for i := 0; i < 10; i++ {
		status, hdr, body := h.apiCallHeader("POST", "/v1/apps/"+appA+"/topics/news/messages", keyA, `{"data":1}`)
		if status == http.StatusTooManyRequests {
			if errorCode(body) != "publish_rate_limited" {
				t.Fatalf("publish: 429 %s", body)
			}
			checkRetryAfter(t, hdr, 1)
			refused++
		} else if status != http.StatusOK {
			t.Fatalf("publish: status %d: %s", status, body)
		}
	}
	if refused == 0 {
		t.Fatal("10 quick publishes at 1 per second: none refused")
	}
	// More than the burst in one call can never pass: 413, not 429.
	if status, _, body := h.apiCallHeader("POST", "/v1/apps/"+appA+"/push", keyA, bulk(6)); status != http.StatusRequestEntityTooLarge || errorCode(body) != "over_publish_burst" {
		t.Fatalf("bulk of 6 over the burst of 5: status %d: %s", status, body)
	}
	// app-b broadcasts freely, and its client gets them.
	for i := 0; i < 10; i++ {
		if status, _, body := h.apiCallHeader("POST", "/v1/apps/"+appB+"/broadcast", keyB, fmt.Sprintf(`{"data":%d}`, i)); status != http.StatusOK {
			t.Fatalf("app-b broadcast %d: status %d: %s", i, status, body)
		}
		bob.expectPush("b", []byte(strconv.Itoa(i)))
	}
	if rl := h.srv.api.RateLimited(); rl[appA].Publish < 2 || rl[appB].Publish != 0 || rl[appA].API != 0 {
		t.Fatalf("rate limited counts %+v", rl)
	}
}

// dialFrom opens a client connection from the source address local.
func (h *harness) dialFrom(tr transport, local string) (*client.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	c, err := client.DialConn(ctx, h.url(tr), client.DialOptions{Encoding: tr.enc, LocalAddr: local})
	if err == nil {
		h.t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

// connectFrom dials from local and completes the handshake as user of
// app-a; it returns the connection or the error of either step.
func (h *harness) connectFrom(tr transport, local, user string) (*tconn, error) {
	c, err := h.dialFrom(tr, local)
	if err != nil {
		return nil, err
	}
	tc := newTconn(h.t, c, user+"/"+tr.name)
	if _, err := tc.handshake(h.token(appA, user), "d-"+user); err != nil {
		_ = c.Close()
		return nil, err
	}
	return tc, nil
}

// tcpRefused fails unless a raw TCP connection from local is closed by the
// server before it sends anything (EOF or reset, not a timeout).
func (h *harness) tcpRefused(local string) {
	h.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: waitTime}
	nc, err := d.Dial("tcp", h.srv.TCPAddr())
	if err != nil {
		return // refused before the handshake completed: fine too
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(waitTime))
	var b [1]byte
	_, err = nc.Read(b[:])
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		h.t.Fatalf("tcp from %s: read %v; want the server to close the connection", local, err)
	}
}

// wsStatus sends a WebSocket upgrade request from local and returns the
// status and headers of the answer (101 for an upgrade), closing the
// connection.
func (h *harness) wsStatus(local string) (int, http.Header, string) {
	h.t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: waitTime}
	nc, err := d.Dial("tcp", h.srv.gw.WSAddr().String())
	if err != nil {
		h.t.Fatalf("dial from %s: %v", local, err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(waitTime))
	req := "GET " + h.cfg.WS.Path + " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		h.t.Fatalf("write upgrade: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		h.t.Fatalf("read upgrade answer from %s: %v", local, err)
	}
	var body []byte
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ = io.ReadAll(resp.Body)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header, errorCode(body)
}

func TestAppConnectionLimit(t *testing.T) {
	h := startServer(t, func(c *config.Config) {
		c.Apps[0].Limits = config.AppLimits{MaxConnections: 2}
	})
	a1 := h.connect(wsBinary, "a1", h.token(appA, "a1"), "d")
	h.connect(rawTCP, "a2", h.token(appA, "a2"), "d")
	for _, tr := range allTransports {
		c := h.dial(tr, "a3")
		_, err := c.handshake(h.token(appA, "a3"), "d")
		pe, d, hasD := asRefusal(err)
		if pe == nil || pe.Code != protocol.CodeAppConnectionLimit || !hasD || d.Code != protocol.DisconnectAppConnectionLimit || !d.Reconnect {
			t.Fatalf("%s: third app-a connection: %v; want ERROR 2007, DISCONNECT 3013 with reconnect", tr.name, err)
		}
		c.expectClosed()
	}
	// Another app is unaffected.
	h.connect(wsJSON, "b1", h.token(appB, "b1"), "d")
	h.connect(rawTCP, "b2", h.token(appB, "b2"), "d")
	h.connect(wsBinary, "b3", h.token(appB, "b3"), "d")
	if n := h.srv.node.Stats().AppLimitRefused; n != 3 {
		t.Fatalf("app limit refusals %d, want 3", n)
	}
	_, _, metrics := h.apiCallHeader("GET", "/metrics", "", "")
	if !strings.Contains(string(metrics), `herald_refused_connections_total{reason="app_limit"} 3`) {
		t.Fatalf("metrics lack app_limit refusals")
	}
	// A place freed is taken again (attempts before the server has seen
	// the close are refused and counted too).
	_ = a1.Close()
	waitFor(t, "a connect after one closed", func() error {
		c, err := h.connectFrom(rawTCP, "127.0.0.1", "a4")
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func TestIPConnectionRate(t *testing.T) {
	h := startServer(t, func(c *config.Config) {
		c.Protection.ConnRatePerIP = 1
		c.Protection.ConnBurstPerIP = 2
	})
	// Two at once from 127.0.0.2, then refused: TCP closed, WebSocket 429.
	for i := 0; i < 2; i++ {
		if _, err := h.connectFrom(rawTCP, "127.0.0.2", fmt.Sprintf("u%d", i)); err != nil {
			t.Fatalf("connection %d within the burst: %v", i, err)
		}
	}
	h.tcpRefused("127.0.0.2")
	status, hdr, code := h.wsStatus("127.0.0.2")
	if status != http.StatusTooManyRequests || code != "connection_rate_limited" {
		t.Fatalf("websocket over the rate: %d %q", status, code)
	}
	checkRetryAfter(t, hdr, 1)
	// Another address is unaffected.
	for i := 0; i < 2; i++ {
		if _, err := h.connectFrom(wsBinary, "127.0.0.3", fmt.Sprintf("v%d", i)); err != nil {
			t.Fatalf("127.0.0.3: %v", err)
		}
	}
	// The bucket refills: 127.0.0.2 gets in again.
	waitFor(t, "127.0.0.2 admitted again", func() error {
		if s, _, _ := h.wsStatus("127.0.0.2"); s != http.StatusSwitchingProtocols {
			return fmt.Errorf("status %d", s)
		}
		return nil
	})
	if r := h.srv.GatewayStats().Refused[gateway.RefusedIPRate]; r < 2 {
		t.Fatalf("ip_rate refusals %d, want at least 2", r)
	}
}

func TestIPFlapBan(t *testing.T) {
	const ban = time.Second
	h := startServer(t, func(c *config.Config) {
		c.Protection.Flap = config.Flap{Connects: 3, Window: time.Minute, Ban: ban}
	})
	for i := 0; i < 3; i++ {
		c, err := h.connectFrom(allTransports[i%3], "127.0.0.4", fmt.Sprintf("f%d", i))
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		_ = c.Close() // flapping: connect, go away, connect again
	}
	start := time.Now()
	h.tcpRefused("127.0.0.4") // the 4th in the window: banned
	status, hdr, code := h.wsStatus("127.0.0.4")
	if status != http.StatusTooManyRequests || code != "address_banned" {
		t.Fatalf("websocket while banned: %d %q", status, code)
	}
	checkRetryAfter(t, hdr, 1)
	// Others are not banned.
	if _, err := h.connectFrom(wsJSON, "127.0.0.5", "g"); err != nil {
		t.Fatalf("127.0.0.5: %v", err)
	}
	// After the ban, the address gets in again.
	waitFor(t, "the ban to end", func() error {
		c, err := h.connectFrom(rawTCP, "127.0.0.4", "f9")
		if err != nil {
			return err
		}
		return c.Close()
	})
	if el := time.Since(start); el < ban-100*time.Millisecond {
		t.Fatalf("admitted again after %v, before the ban of %v ended", el, ban)
	}
	if r := h.srv.GatewayStats().Refused[gateway.RefusedIPBanned]; r < 2 {
		t.Fatalf("ip_banned refusals %d, want at least 2", r)
	}
}

func TestIPAllowDeny(t *testing.T) {
	h := startServer(t, func(c *config.Config) {
		c.Protection.AllowIPs = []string{"127.0.0.0/29"} // .0 to .7
		c.Protection.DenyIPs = []string{"127.0.0.3"}
	})
	for _, tr := range allTransports {
		if _, err := h.connectFrom(tr, "127.0.0.2", "ok-"+tr.name); err != nil {
			t.Fatalf("%s from an allowed address: %v", tr.name, err)
		}
	}
	for _, local := range []string{"127.0.0.3", "127.0.0.9"} { // denied; outside the allow list
		h.tcpRefused(local)
		status, hdr, code := h.wsStatus(local)
		if status != http.StatusForbidden || code != "address_not_allowed" || hdr.Get("Retry-After") != "" {
			t.Fatalf("websocket from %s: %d %q Retry-After %q; want 403 address_not_allowed", local, status, code, hdr.Get("Retry-After"))
		}
	}
	st := h.srv.GatewayStats()
	if st.Refused[gateway.RefusedDenied] != 2 || st.Refused[gateway.RefusedNotAllowed] != 2 {
		t.Fatalf("refusals %v; want 2 denied, 2 not allowed", st.Refused)
	}
}

func TestOverloadRefusal(t *testing.T) {
	h := startServer(t, func(c *config.Config) { c.Protection.MaxConnections = 2 })
	a := h.connect(wsBinary, "a", h.token(appA, "a"), "d")
	b := h.connect(rawTCP, "b", h.token(appA, "b"), "d")
	h.tcpRefused("127.0.0.1")
	status, hdr, code := h.wsStatus("127.0.0.1")
	if status != http.StatusServiceUnavailable || code != "overloaded" {
		t.Fatalf("websocket over max_connections: %d %q", status, code)
	}
	checkRetryAfter(t, hdr, 1)
	// The connections already open are served.
	for i := 0; i < 3; i++ {
		h.broadcast(appA, i)
		a.expectPush("b", []byte(strconv.Itoa(i)))
		b.expectPush("b", []byte(strconv.Itoa(i)))
	}
	_ = a.Close()
	waitFor(t, "a connection admitted once one closed", func() error {
		c, err := h.connectFrom(wsJSON, "127.0.0.1", "c")
		if err != nil {
			return err
		}
		return c.Close()
	})
	if r := h.srv.GatewayStats().Refused[gateway.RefusedMaxConns]; r < 2 {
		t.Fatalf("max_connections refusals %d, want at least 2", r)
	}
}

func TestMemoryOverloadRefusal(t *testing.T) {
	h := startServer(t, func(c *config.Config) { c.Protection.MaxMemory = 1 }) // always over
	h.tcpRefused("127.0.0.1")
	status, _, code := h.wsStatus("127.0.0.1")
	if status != http.StatusServiceUnavailable || code != "overloaded" {
		t.Fatalf("websocket over max_memory: %d %q", status, code)
	}
	if r := h.srv.GatewayStats().Refused[gateway.RefusedMemory]; r != 2 {
		t.Fatalf("max_memory refusals %d, want 2", r)
	}
	// The API still answers.
	h.broadcast(appA, 1)
}

// TestCPUOverloadRefusal: while the process keeps more of its cores busy
// than protection.max_cpu_percent, new connections are refused (TCP closed,
// WebSocket 503 overloaded) and open ones are served; when it calms down,
// connections are admitted again. Not parallel: the bound is on this
// process's CPU, which a busy goroutine here drives over it.
func TestCPUOverloadRefusal(t *testing.T) {
	// Half a core's worth: one busy goroutine is over it, an idle test
	// process under it, whatever GOMAXPROCS is.
	pct := max(1, 50/runtime.GOMAXPROCS(0))
	h := startServer(t, func(c *config.Config) { c.Protection.MaxCPUPercent = pct })
	open := h.connect(wsBinary, "open", h.token(appA, "ann"), "phone")

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // one core busy
		defer close(done)
		for n := 0; ; n++ {
			if n%1024 == 0 {
				select {
				case <-stop:
					return
				default:
				}
			}
		}
	}()
	waitFor(t, "refusals over max_cpu_percent", func() error {
		if status, _, code := h.wsStatus("127.0.0.1"); status != http.StatusServiceUnavailable || code != "overloaded" {
			return fmt.Errorf("upgrade answered %d %q", status, code)
		}
		return nil
	})
	h.tcpRefused("127.0.0.1")
	open.ping(1) // the open connection is served
	close(stop)
	<-done
	if r := h.srv.GatewayStats().Refused[gateway.RefusedCPU]; r < 2 {
		t.Fatalf("max_cpu refusals %d, want at least 2", r)
	}
	waitFor(t, "admitted again once idle", func() error {
		if status, _, _ := h.wsStatus("127.0.0.1"); status != http.StatusSwitchingProtocols {
			return fmt.Errorf("upgrade answered %d", status)
		}
		return nil
	})
}
