package main

// End-to-end: a real Herald (internal/server, in this process, every
// listener on 127.0.0.1 port 0 and the embedded store in a temporary
// directory), this backend on an httptest server, and Go SDK clients as
// the users. Nothing sleeps to synchronise: messages are awaited with a
// deadline, server-side state is polled until a deadline.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	nbiolog "github.com/lesismal/nbio/logging"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/server"
)

const (
	testApp    = "stocks"
	testSecret = "stockalert-test-secret-0123456789"
	testKey    = "stockalert-test-key-0123456789"
	waitTime   = 15 * time.Second
)

// startHerald starts a Herald server for the test and stops it at the end.
func startHerald(t *testing.T) *server.Server {
	t.Helper()
	nbiolog.SetLevel(nbiolog.LevelNone)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.WS.Addr = "127.0.0.1:0"
	cfg.TCP.Addr = ""
	cfg.API.Addr = "127.0.0.1:0"
	cfg.Apps = []config.App{{ID: testApp, Secret: testSecret, APIKeys: []string{testKey}}}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	srv, err := server.New(cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		if err := srv.Shutdown(ctx, ""); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv
}

// newService returns the backend's service over stocks stocks, talking to srv.
func newService(t *testing.T, srv *server.Server, stocks int) *Service {
	t.Helper()
	h := &Herald{API: srv.APIURL(), WS: srv.WSURL(), App: testApp, Secret: []byte(testSecret), Key: testKey,
		HTTP: &http.Client{Timeout: waitTime, Transport: &http.Transport{}}}
	t.Cleanup(h.HTTP.CloseIdleConnections)
	svc := NewService(NewMarket(stocks, 3), NewIndex(), h, slog.New(slog.DiscardHandler))
	for _, q := range svc.Market.Quotes() {
		svc.Index.AddStock(q.Symbol, q.Ref)
	}
	return svc
}

// call sends a JSON request to the backend (or Herald) and decodes the answer.
func call(t *testing.T, method, url, key string, body, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %v in %s", method, url, err, raw)
		}
	}
}

// nextAlert waits for the next message on c and decodes it as an alert.
func nextAlert(t *testing.T, c *client.Client) (client.Message, AlertData) {
	t.Helper()
	select {
	case m, ok := <-c.Messages():
		if !ok {
			t.Fatalf("client stopped: %v", c.Err())
		}
		var a AlertData
		if err := json.Unmarshal(m.Payload, &a); err != nil {
			t.Fatalf("alert payload %q: %v", m.Payload, err)
		}
		return m, a
	case <-time.After(waitTime):
		t.Fatal("no alert within", waitTime)
	}
	panic("unreachable")
}

func TestAlertReachesTheUser(t *testing.T) {
	srv := startHerald(t)
	svc := newService(t, srv, 12)
	web := httptest.NewServer(svc.Handler("does-not-exist.js"))
	defer web.Close()

	var sess struct{ User, Token, WS, Topic string }
	call(t, "POST", web.URL+"/api/session", "", map[string]string{"user": "alice"}, &sess)
	if sess.WS != srv.WSURL() || sess.Topic != PricesTopic || sess.Token == "" {
		t.Fatalf("session = %+v", sess)
	}
	c, err := client.New(client.Config{URLs: []string{sess.WS}, Token: sess.Token, Device: "phone", AutoAck: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect with the backend's token: %v", err)
	}

	sym := svc.Market.Quotes()[0].Symbol
	call(t, "POST", web.URL+"/api/alerts", "", map[string]any{"user": "alice", "symbol": sym, "pct": 2}, nil)
	call(t, "POST", web.URL+"/api/alerts", "", map[string]any{"user": "bob", "symbol": sym, "pct": 5}, nil)
	var list struct{ Alerts []alertView }
	call(t, "GET", web.URL+"/api/alerts?user=alice", "", nil, &list)
	if len(list.Alerts) != 1 || list.Alerts[0] != (alertView{sym, 2}) {
		t.Fatalf("alice's alerts = %+v", list.Alerts)
	}

	// +1.5 %: nothing; +2.5 %: alice's +2 %; -3 %: alice's -2 %.
	var mv struct{ Alerts, Accepted int }
	call(t, "POST", web.URL+"/api/move", "", map[string]any{"symbol": sym, "pct": 1.5}, &mv)
	if mv.Alerts != 0 {
		t.Fatalf("+1.5 %%: %d alerts", mv.Alerts)
	}
	call(t, "POST", web.URL+"/api/move", "", map[string]any{"symbol": sym, "pct": 2.5}, &mv)
	if mv.Alerts != 1 || mv.Accepted != 1 {
		t.Fatalf("+2.5 %%: %+v, want 1 alert accepted", mv)
	}
	m, a := nextAlert(t, c)
	if m.Stream != "u:alice" || m.Seq != 1 || a.Symbol != sym || a.BP != 200 || a.Dir != "up" {
		t.Fatalf("first alert: %s #%d %+v", m.Stream, m.Seq, a)
	}
	call(t, "POST", web.URL+"/api/move", "", map[string]any{"symbol": sym, "pct": -3}, &mv)
	m, a = nextAlert(t, c)
	if m.Seq != 2 || a.BP != 200 || a.Dir != "down" {
		t.Fatalf("second alert: #%d %+v", m.Seq, a)
	}

	// The client acknowledged both: Herald holds nothing unread for it.
	deadline := time.Now().Add(waitTime)
	for {
		var u struct{ Acked, Unread int }
		call(t, "GET", srv.APIURL()+"/v1/apps/"+testApp+"/users/alice/unread?device=phone", testKey, nil, &u)
		if u.Acked == 2 && u.Unread == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unread = %+v, want both acknowledged", u)
		}
		time.Sleep(20 * time.Millisecond) // polling the API, with a deadline
	}

	// The page and its script are served.
	resp, err := http.Get(web.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "herald.min.js") || !strings.Contains(string(page), "app.js") {
		t.Errorf("index page: %d %.200s", resp.StatusCode, page)
	}
}

// TestStormLosesNothing runs the storm mode small: every alert of the
// storm is pushed in several bulk pushes and arrives at its user's client.
func TestStormLosesNothing(t *testing.T) {
	srv := startHerald(t)
	svc := newService(t, srv, 40)
	svc.Batch = 50 // several bulk pushes, in parallel
	ctx, cancel := context.WithTimeout(context.Background(), 2*waitTime)
	defer cancel()
	rep, err := RunStorm(ctx, svc, StormConfig{
		Users: 30, Follow: 10, Normal: 300 * time.Millisecond, Interval: 50 * time.Millisecond, VolBP: 30,
		Wait: waitTime, ConnectTimeout: waitTime,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("storm: %v (%+v)", err, rep)
	}
	if rep.StormAlerts == 0 || rep.Accepted != rep.StormAlerts || rep.Delivered != rep.StormAlerts || rep.Lost != 0 {
		t.Fatalf("storm: %+v", rep)
	}
	if rep.NormalDelivered != rep.NormalAlerts {
		t.Fatalf("normal phase: %d of %d delivered", rep.NormalDelivered, rep.NormalAlerts)
	}
	if rep.P99 <= 0 || rep.PeakRate <= 0 {
		t.Fatalf("no latency or rate measured: %+v", rep)
	}
	t.Logf("%d storm alerts, p50 %v, p99 %v", rep.StormAlerts, rep.P50, rep.P99)
}
