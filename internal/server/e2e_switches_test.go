package server

// End-to-end tests of the degrade switches (issue 12 item 4): each switch
// over real sockets, for one app and for the whole node, from the
// configuration, a reload and the admin API, and kept across a restart.

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

// flip turns a switch on or off through the server, failing the test on
// an error.
func (h *harness) flip(name, app string, on bool) {
	h.t.Helper()
	if err := h.srv.FlipSwitch(name, app, on); err != nil {
		h.t.Fatalf("flip %s %s %v: %v", name, app, on, err)
	}
}

// TestSwitchPause: an app's pushes and publishes are stored but not sent
// while it is paused, other apps are served, and when it is resumed what
// was held arrives in order, without another message to show the gap.
func TestSwitchPause(t *testing.T) {
	h := startServer(t)
	a := h.connect(wsBinary, "a", h.token(appA, "ann", "news"), "phone")
	a.subscribe(1, "news")
	b := h.connect(wsBinary, "b", h.token(appB, "bob"), "phone")
	// Once a push arrives live the inbox's catch-up is over (a catch-up
	// reads what is stored, held messages too).
	live := h.pushLive(a, appA, "ann")

	h.flip("pause", appA, true)
	var held struct {
		Held        bool `json:"held"`
		Connections int  `json:"connections"`
		Subscribers int  `json:"subscribers"`
	}
	h.apiOK("POST", "/v1/apps/"+appA+"/users/ann/messages", keyA, map[string]any{"data": "m1"}, &held)
	if !held.Held || held.Connections != 0 {
		t.Fatalf("push while paused answered %+v; want held and no connection", held)
	}
	h.pushUser(appA, "ann", "m2")
	held.Held = false
	h.apiOK("POST", "/v1/apps/"+appA+"/topics/news/messages", keyA, map[string]any{"data": "n1"}, &held)
	if !held.Held {
		t.Fatalf("publish while paused answered %+v; want held", held)
	}
	// Other apps are not paused.
	if r := h.pushUser(appB, "bob", "b1"); r.Connections != 1 {
		t.Fatalf("app-b push reached %d connections", r.Connections)
	}
	b.expectPush("u:bob", jsonOf(t, "b1"))
	// Nothing of app-a was sent: the PONG is the next frame.
	a.ping(7)
	if d := h.srv.Node().DegradeStats(); d.Held != 3 {
		t.Fatalf("held = %d; want 3", d.Held)
	}
	if got, want := h.srv.AppCounters()[appA].Accepted, uint64(live+3); got != want {
		t.Fatalf("app-a accepted = %d; want %d (held messages are accepted)", got, want)
	}

	h.flip("pause", appA, false)
	got := map[string][]string{}
	for range 3 {
		f := a.expect(protocol.TypePush)
		got[f.Stream] = append(got[f.Stream], string(f.Payload))
	}
	if strings.Join(got["u:ann"], ",") != `"m1","m2"` || strings.Join(got["t:news"], ",") != `"n1"` {
		t.Fatalf("after resume got %v; want m1, m2 in order and n1", got)
	}
	h.pushUser(appA, "ann", "m3")
	a.expectPush("u:ann", jsonOf(t, "m3"))
}

// TestSwitchPauseGlobalLiveOnly: the node-wide pause holds every app, and
// a publish that would not be stored (history off) is refused with 503
// while paused instead of being lost.
func TestSwitchPauseGlobalLiveOnly(t *testing.T) {
	h := startServer(t, func(c *config.Config) { c.HistorySize = 0 })
	b := h.connect(wsBinary, "b", h.token(appB, "bob"), "phone")
	h.pushLive(b, appB, "bob") // the catch-up is over
	h.flip("pause", "", true)
	status, hdr, body := h.apiCallHeader("POST", "/v1/apps/"+appB+"/topics/news/messages", keyB, `{"data":"x"}`)
	if status != http.StatusServiceUnavailable || errorCode(body) != "switched_off" || hdr.Get("Retry-After") == "" {
		t.Fatalf("live-only publish while paused: %d %s (Retry-After %q); want 503 switched_off with Retry-After", status, body, hdr.Get("Retry-After"))
	}
	var r struct {
		Held bool `json:"held"`
	}
	h.apiOK("POST", "/v1/apps/"+appB+"/users/bob/messages", keyB, map[string]any{"data": "m1"}, &r)
	if !r.Held {
		t.Fatal("inbox push not held by the node-wide pause")
	}
	b.ping(1)
	h.flip("pause", "", false)
	b.expectPush("u:bob", jsonOf(t, "m1"))
}

// TestSwitchRejectConnections: new connections are refused (node-wide at
// accept, per app at CONNECT with ERROR 2008 and DISCONNECT 3014) while
// open ones are served.
func TestSwitchRejectConnections(t *testing.T) {
	h := startServer(t)
	open := h.connect(wsBinary, "open", h.token(appA, "ann"), "phone")

	h.flip("reject_connections", appA, true)
	for _, tr := range allTransports {
		c := h.dial(tr, "refused")
		_, err := c.handshake(h.token(appA, "ann"), "tablet")
		pe, d, hasD := asRefusal(err)
		if pe == nil || pe.Code != protocol.CodeUnavailable || !hasD || d.Code != protocol.DisconnectUnavailable || !d.Code.Reconnect() {
			t.Fatalf("%s: app-a CONNECT while switched off: %v; want ERROR 2008 and DISCONNECT 3014", tr.name, err)
		}
	}
	h.connect(wsBinary, "other app", h.token(appB, "bob"), "phone")
	open.ping(1)

	h.flip("reject_connections", appA, false)
	h.flip("reject_connections", "", true)
	status, hdr, code := h.wsStatus("127.0.0.1")
	if status != http.StatusServiceUnavailable || code != "switched_off" || hdr.Get("Retry-After") == "" {
		t.Fatalf("WebSocket upgrade while switched off: %d %q Retry-After %q; want 503 switched_off with Retry-After", status, code, hdr.Get("Retry-After"))
	}
	h.tcpRefused("127.0.0.1")
	open.ping(2)
	if got := h.srv.GatewayStats().Refused["switched_off"]; got < 2 {
		t.Fatalf("refused switched_off = %d; want at least 2", got)
	}
	h.flip("reject_connections", "", false)
	h.connect(wsBinary, "after", h.token(appA, "ann"), "tablet")
}

// TestSwitchPresenceUnread: presence and unread queries answer 503
// switched_off with Retry-After for the app switched off, and work for
// the others.
func TestSwitchPresenceUnread(t *testing.T) {
	h := startServer(t)
	h.flip("presence_off", appA, true)
	h.flip("unread_off", appA, true)
	for _, path := range []string{"/users/ann/presence", "/users/ann/unread?device=phone"} {
		status, hdr, body := h.apiCallHeader("GET", "/v1/apps/"+appA+path, keyA, "")
		if status != http.StatusServiceUnavailable || errorCode(body) != "switched_off" || hdr.Get("Retry-After") != "5" {
			t.Fatalf("GET %s: %d %s; want 503 switched_off, Retry-After 5", path, status, body)
		}
		h.apiOK("GET", "/v1/apps/"+appB+path, keyB, nil, nil)
	}
	h.apiError("POST", "/v1/apps/"+appA+"/presence", keyA, map[string]any{"users": []string{"ann"}}, http.StatusServiceUnavailable, "switched_off")
	h.flip("presence_off", appA, false)
	h.apiOK("GET", "/v1/apps/"+appA+"/users/ann/presence", keyA, nil, nil)
	if d := h.srv.Node().DegradeStats(); d.QueriesOff != 3 {
		t.Fatalf("queries_off = %d; want 3", d.QueriesOff)
	}
}

// TestSwitchRecoveryOff: a recovery is answered "cannot recover" while
// recovery is off, and recovers again once it is on.
func TestSwitchRecoveryOff(t *testing.T) {
	h := startServer(t)
	c := h.connect(wsBinary, "c", h.token(appA, "ann", "news"), "phone")
	_, reply := c.subscribeFrom(1, "news", "", 0)
	epoch := reply.Epoch
	for i := range 3 {
		h.publishSeq(appA, "news", i)
		c.expect(protocol.TypePush)
	}
	c.write(&protocol.Frame{Type: protocol.TypeUnsubscribe, ID: 2, Topic: "news"})
	c.expect(protocol.TypeReply)

	h.flip("recovery_off", appA, true)
	pushes, reply := c.subscribeFrom(3, "news", epoch, 1)
	if reply.Recovered || len(pushes) != 0 || !strings.Contains(reply.Reason, "recovery is switched off") || reply.Seq != 3 {
		t.Fatalf("recovery while off: %d pushes, REPLY %s; want cannot recover, reason naming the switch, at seq 3", len(pushes), describe(reply))
	}
	c.write(&protocol.Frame{Type: protocol.TypeUnsubscribe, ID: 4, Topic: "news"})
	c.expect(protocol.TypeReply)
	h.flip("recovery_off", appA, false)
	pushes, reply = c.subscribeFrom(5, "news", epoch, 1)
	if !reply.Recovered || len(pushes) != 2 || pushes[0].Seq != 2 {
		t.Fatalf("recovery back on: %d pushes, REPLY %s; want 2 recovered", len(pushes), describe(reply))
	}
}

// TestSwitchHistoryOff: with history off an app's topic messages go out
// live only (no seq), and a recovery from a position older than the time
// history came back is answered "cannot recover": messages sent live only
// are not in the history, and that loss is announced, not papered over.
func TestSwitchHistoryOff(t *testing.T) {
	h := startServer(t)
	c := h.connect(wsBinary, "c", h.token(appA, "ann", "news"), "phone")
	_, reply := c.subscribeFrom(1, "news", "", 0)
	epoch := reply.Epoch
	h.publishSeq(appA, "news", "s1")
	c.expectPush("t:news", jsonOf(t, "s1"))

	h.flip("history_off", appA, true)
	var r struct {
		Seq uint64 `json:"seq"`
	}
	h.apiOK("POST", "/v1/apps/"+appA+"/topics/news/messages", keyA, map[string]any{"data": "live"}, &r)
	if r.Seq != 0 {
		t.Fatalf("publish with history off stored seq %d", r.Seq)
	}
	if f := c.expectPush("t:news", jsonOf(t, "live")); f.Seq != 0 {
		t.Fatalf("live-only PUSH carries seq %d", f.Seq)
	}
	h.flip("history_off", appA, false)
	h.publishSeq(appA, "news", "s2")
	c.expectPush("t:news", jsonOf(t, "s2"))

	c.write(&protocol.Frame{Type: protocol.TypeUnsubscribe, ID: 2, Topic: "news"})
	c.expect(protocol.TypeReply)
	pushes, reply := c.subscribeFrom(3, "news", epoch, 1)
	if reply.Recovered || len(pushes) != 0 || !strings.Contains(reply.Reason, "history was switched off") {
		t.Fatalf("recovery across the live-only message: %d pushes, REPLY %s; want cannot recover", len(pushes), describe(reply))
	}
	// A position stored after history came back recovers.
	h.publishSeq(appA, "news", "s3")
	c.expectPush("t:news", jsonOf(t, "s3"))
	c.write(&protocol.Frame{Type: protocol.TypeUnsubscribe, ID: 4, Topic: "news"})
	c.expect(protocol.TypeReply)
	pushes, reply = c.subscribeFrom(5, "news", epoch, 2)
	if !reply.Recovered || len(pushes) != 1 || string(pushes[0].Payload) != `"s3"` {
		t.Fatalf("recovery after history came back: %d pushes, REPLY %s; want s3 recovered", len(pushes), describe(reply))
	}
}

// TestSwitchesConfigReloadRestart: switches come from the configuration,
// change with a reload, and an operator's overrides outlive a restart.
func TestSwitchesConfigReloadRestart(t *testing.T) {
	dir := t.TempDir()
	setDir := func(c *config.Config) {
		c.DataDir = dir
		c.Apps[0].Switches = []string{"presence_off"}
	}
	h := startServer(t, setDir)
	h.apiError("GET", "/v1/apps/"+appA+"/users/ann/presence", keyA, nil, http.StatusServiceUnavailable, "switched_off")

	cfg := h.srv.Config()
	cfg.Apps = append([]config.App(nil), cfg.Apps...)
	cfg.Apps[0].Switches = nil
	cfg.Switches = []string{"unread_off"}
	res, err := h.srv.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(res.Changed, "\n")
	if !strings.Contains(joined, "switches: presence_off off for app "+appA) || !strings.Contains(joined, "switches: unread_off on for the whole node") {
		t.Fatalf("reload changes:\n%s", joined)
	}
	h.apiOK("GET", "/v1/apps/"+appA+"/users/ann/presence", keyA, nil, nil)
	h.apiError("GET", "/v1/apps/"+appB+"/users/bob/unread?device=d", keyB, nil, http.StatusServiceUnavailable, "switched_off")
	bad := cfg
	bad.Switches = []string{"nope"}
	if _, err := h.srv.Reload(bad); err == nil || !strings.Contains(err.Error(), `unknown switch "nope"`) {
		t.Fatalf("reload with an unknown switch: %v", err)
	}

	h.flip("reject_connections", appB, true)
	h.flip("unread_off", "", false) // over the configuration
	if err := h.shutdown(""); err != nil {
		t.Fatal(err)
	}
	h2 := startServer(t, func(c *config.Config) { c.DataDir = dir; c.Switches = []string{"unread_off"} })
	var st []struct {
		Name, App, Source string
	}
	data, _ := json.Marshal(h2.srv.Switches().InForce())
	_ = json.Unmarshal(data, &st)
	if len(st) != 1 || st[0].Name != "reject_connections" || st[0].App != appB || st[0].Source != "admin" {
		t.Fatalf("after restart in force: %s; want only reject_connections for app-b, from an operator", data)
	}
	h2.apiOK("GET", "/v1/apps/"+appB+"/users/bob/unread?device=d", keyB, nil, nil)
}
