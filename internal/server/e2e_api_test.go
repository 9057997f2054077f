package server

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

// TestPushUserAllDevices pushes to a user with one device on each transport
// and checks that every device receives the message, with a JSON ("data")
// and a binary ("b64") payload, and that the answer counts the connections.
func TestPushUserAllDevices(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "alice")
	devices := []*tconn{
		h.connect(wsBinary, "phone", tok, "phone"),
		h.connect(wsJSON, "browser", tok, "browser"),
		h.connect(rawTCP, "desk", tok, "desk"),
	}

	cases := []struct {
		name    string
		body    string
		payload []byte
	}{
		{"json object", `{"id":"msg-1","data":{"n":1,"list":[true,null,"x"],"s":"h\u00e9 <&>"}}`,
			[]byte(`{"n":1,"list":[true,null,"x"],"s":"h\u00e9 <&>"}`)},
		{"json string", `{"id":"msg-2","data":"hello"}`, []byte(`"hello"`)},
		{"json number", `{"id":"msg-3","data":42}`, []byte(`42`)},
		{"b64 binary", `{"id":"msg-4","b64":"` + base64.StdEncoding.EncodeToString([]byte{0, 0xff, 0x80, 'h', 'i', '\n'}) + `"}`,
			[]byte{0, 0xff, 0x80, 'h', 'i', '\n'}},
		{"b64 text", `{"id":"msg-5","b64":"` + base64.StdEncoding.EncodeToString([]byte("plain text")) + `"}`,
			[]byte("plain text")},
	}
	for _, tc := range cases {
		var r pushResult
		h.apiOK("POST", "/v1/apps/app-a/users/alice/messages", keyA, tc.body, &r)
		wantID := strings.TrimPrefix(tc.body[:strings.Index(tc.body, `",`)], `{"id":"`)
		if r.ID != wantID || r.Connections != 3 {
			t.Fatalf("%s: answer %+v; want id %q and 3 connections", tc.name, r, wantID)
		}
		for _, d := range devices {
			f := d.expectPush("u:alice", tc.payload)
			if f.MsgID != wantID {
				t.Fatalf("%s: %s got msg id %q; want %q", tc.name, d.name, f.MsgID, wantID)
			}
		}
	}

	// Without an id, the server makes one, the same for every device.
	r := h.pushUser(appA, "alice", map[string]int{"k": 7})
	if r.ID == "" || r.Connections != 3 {
		t.Fatalf("answer %+v; want a generated id and 3 connections", r)
	}
	for _, d := range devices {
		if f := d.expectPush("u:alice", []byte(`{"k":7}`)); f.MsgID != r.ID {
			t.Fatalf("%s: msg id %q; want %q", d.name, f.MsgID, r.ID)
		}
	}
	// Two generated ids differ.
	if r2 := h.pushUser(appA, "nobody", 1); r2.ID == r.ID || r2.ID == "" || r2.Connections != 0 {
		t.Fatalf("push to an offline user: %+v; want a new id and 0 connections", r2)
	}
}

// TestPushUsers pushes one message to a list of users.
func TestPushUsers(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	alice1 := h.connect(wsBinary, "alice1", h.token(appA, "alice"), "a1")
	alice2 := h.connect(rawTCP, "alice2", h.token(appA, "alice"), "a2")
	bob := h.connect(wsJSON, "bob", h.token(appA, "bob"), "b1")

	var r struct {
		ID      string `json:"id"`
		Results []struct {
			User        string `json:"user"`
			Connections int    `json:"connections"`
		} `json:"results"`
	}
	h.apiOK("POST", "/v1/apps/app-a/messages", keyA,
		map[string]any{"users": []string{"alice", "bob", "carol"}, "data": map[string]string{"hi": "all"}}, &r)
	want := []struct {
		user string
		n    int
	}{{"alice", 2}, {"bob", 1}, {"carol", 0}}
	if r.ID == "" || len(r.Results) != len(want) {
		t.Fatalf("answer %+v; want an id and %d results", r, len(want))
	}
	for i, w := range want {
		if r.Results[i].User != w.user || r.Results[i].Connections != w.n {
			t.Fatalf("result %d = %+v; want user %q with %d connections", i, r.Results[i], w.user, w.n)
		}
	}
	payload := []byte(`{"hi":"all"}`)
	for _, c := range []struct {
		c      *tconn
		stream string
	}{{alice1, "u:alice"}, {alice2, "u:alice"}, {bob, "u:bob"}} {
		if f := c.c.expectPush(c.stream, payload); f.MsgID != r.ID {
			t.Fatalf("%s: msg id %q; want %q", c.c.name, f.MsgID, r.ID)
		}
	}
}

// TestPublishTopic checks that only a topic's subscribers receive what is
// published to it, in order.
func TestPublishTopic(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := func(u string) string { return h.token(appA, u, "*") }
	sub1 := h.connect(wsBinary, "sub1", tok("u1"), "d")
	sub2 := h.connect(rawTCP, "sub2", tok("u2"), "d")
	sub3 := h.connect(wsJSON, "sub3", tok("u3"), "d") // subscribes, then unsubscribes
	other := h.connect(wsJSON, "other", tok("u4"), "d")
	sub1.subscribe(1, "news")
	sub2.subscribe(1, "news")
	sub3.subscribe(1, "news")
	other.subscribe(1, "sports")
	sub3.write(&protocol.Frame{Type: protocol.TypeUnsubscribe, ID: 2, Topic: "news"})
	if f := sub3.expect(protocol.TypeReply); f.ID != 2 {
		t.Fatalf("unsubscribe reply id %d; want 2", f.ID)
	}

	const n = 20
	for i := range n {
		if r := h.publish(appA, "news", map[string]int{"i": i}); r.Subscribers != 2 || r.ID == "" {
			t.Fatalf("publish %d: %+v; want an id and 2 subscribers", i, r)
		}
	}
	for i := range n {
		want := jsonOf(t, map[string]int{"i": i})
		sub1.expectPush("t:news", want)
		sub2.expectPush("t:news", want)
	}
	if r := h.publish(appA, "nobody-listens", 1); r.Subscribers != 0 {
		t.Fatalf("publish to a topic without subscribers: %+v", r)
	}

	// The hub has one fan-out worker, which runs passes in the order the
	// messages were published: a broadcast sent after the publishes reaches
	// every connection after any of them. So the first thing sub3 and
	// other receive must be the broadcast.
	r := h.broadcast(appA, "after")
	if r.Connections != 4 {
		t.Fatalf("broadcast: %+v; want 4 connections", r)
	}
	for _, c := range []*tconn{sub3, other, sub1, sub2} {
		c.expectPush("b", []byte(`"after"`))
	}
	// sports still works for other.
	h.publish(appA, "sports", "goal")
	other.expectPush("t:sports", []byte(`"goal"`))
}

// TestBroadcast checks that a broadcast reaches every authenticated
// connection of the app and none of another app.
func TestBroadcast(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	var as []*tconn
	for i, tr := range allTransports {
		as = append(as, h.connect(tr, "a"+tr.name, h.token(appA, fmt.Sprintf("user%d", i)), "d"))
	}
	b := h.connect(rawTCP, "b", h.token(appB, "user0"), "d")
	unauth := h.dial(wsBinary, "unauthenticated") // accepted but no CONNECT: not in the app
	h.waitOpen(5)

	r := h.broadcast(appA, map[string]bool{"all": true})
	if r.Connections != 3 || r.ID == "" {
		t.Fatalf("broadcast: %+v; want an id and 3 connections", r)
	}
	for _, c := range as {
		if f := c.expectPush("b", []byte(`{"all":true}`)); f.MsgID != r.ID {
			t.Fatalf("%s: msg id %q; want %q", c.name, f.MsgID, r.ID)
		}
	}
	// App B's connection gets its own app's broadcast first (one fan-out
	// worker, passes in order), so it never got app A's.
	if rb := h.broadcast(appB, "for b"); rb.Connections != 1 {
		t.Fatalf("broadcast to app B: %+v; want 1 connection", rb)
	}
	b.expectPush("b", []byte(`"for b"`))
	// The unauthenticated connection got nothing: it still speaks
	// PING/PONG and its first frame is the PONG.
	unauth.ping(12345)

	// The hub splits a topic's subscribers into parts by connection id;
	// with 16 more connections every part has some. All of them get a
	// broadcast and a publish to a topic they all subscribe to.
	var many []*tconn
	for i := range 16 {
		c := h.connect(rawTCP, fmt.Sprint("many", i), h.token(appA, fmt.Sprint("many", i), "wide"), "d")
		c.subscribe(1, "wide")
		many = append(many, c)
	}
	if r := h.broadcast(appA, "to all"); r.Connections != 3+len(many) {
		t.Fatalf("broadcast: %+v; want %d connections", r, 3+len(many))
	}
	if r := h.publish(appA, "wide", "to wide"); r.Subscribers != len(many) {
		t.Fatalf("publish: %+v; want %d subscribers", r, len(many))
	}
	for _, c := range many {
		c.expectPush("b", []byte(`"to all"`))
		c.expectPush("t:wide", []byte(`"to wide"`))
	}
	for _, c := range as {
		c.expectPush("b", []byte(`"to all"`))
	}
}

type presenceDevice struct {
	Device    string    `json:"device"`
	Node      string    `json:"node"`
	ConnID    uint64    `json:"conn_id"`
	Since     time.Time `json:"since"`
	Transport string    `json:"transport"`
	Remote    string    `json:"remote"`
}

type presence struct {
	User    string           `json:"user"`
	Online  bool             `json:"online"`
	Devices []presenceDevice `json:"devices"`
}

func (h *harness) presence(app, user string) presence {
	h.t.Helper()
	var p presence
	h.apiOK("GET", "/v1/apps/"+app+"/users/"+user+"/presence", keyOf(app), nil, &p)
	return p
}

// TestPresence checks the devices, node, transport, connection time and
// remote address that presence reports.
func TestPresence(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "alice")
	before := time.Now().Add(-time.Second) // margin for clock granularity
	phone := h.connect(wsBinary, "phone", tok, "phone")
	desk := h.connect(rawTCP, "desk", tok, "desk")
	after := time.Now().Add(time.Second)

	p := h.presence(appA, "alice")
	if p.User != "alice" || !p.Online || len(p.Devices) != 2 {
		t.Fatalf("presence %+v; want alice online with 2 devices", p)
	}
	// Sorted by device name.
	for i, w := range []struct {
		device, transport string
		c                 *tconn
	}{{"desk", "tcp", desk}, {"phone", "ws", phone}} {
		d := p.Devices[i]
		if d.Device != w.device || d.Transport != w.transport || d.Node != testNode || d.ConnID == 0 {
			t.Fatalf("device %d = %+v; want %s over %s on %s", i, d, w.device, w.transport, testNode)
		}
		if d.Since.Before(before) || d.Since.After(after) {
			t.Fatalf("device %s since %v; want between %v and %v", d.Device, d.Since, before, after)
		}
		if d.Remote != w.c.LocalAddr().String() {
			t.Fatalf("device %s remote %q; want the client's address %q", d.Device, d.Remote, w.c.LocalAddr())
		}
	}
	if p.Devices[0].ConnID == p.Devices[1].ConnID {
		t.Fatalf("two devices with one conn id: %+v", p.Devices)
	}

	// Offline users: online false and an empty list, not null.
	status, raw := h.apiCall("GET", "/v1/apps/app-a/users/bob/presence", keyA, nil)
	if status != http.StatusOK || !strings.Contains(string(raw), `"devices":[]`) || !strings.Contains(string(raw), `"online":false`) {
		t.Fatalf("presence of an offline user: %d %s", status, raw)
	}
	// Another app's user of the same name is someone else.
	if pb := h.presence(appB, "alice"); pb.Online || len(pb.Devices) != 0 {
		t.Fatalf("app B's alice: %+v; want offline", pb)
	}

	// Several users at once.
	var many struct {
		Users []presence `json:"users"`
	}
	h.apiOK("POST", "/v1/apps/app-a/presence", keyA, map[string]any{"users": []string{"bob", "alice"}}, &many)
	if len(many.Users) != 2 || many.Users[0].User != "bob" || many.Users[0].Online ||
		many.Users[1].User != "alice" || !many.Users[1].Online || len(many.Users[1].Devices) != 2 {
		t.Fatalf("presence of [bob alice]: %+v", many)
	}

	// A device that goes away leaves the presence.
	_ = phone.Close()
	waitFor(t, "phone to leave the presence", func() error {
		p := h.presence(appA, "alice")
		if len(p.Devices) != 1 || p.Devices[0].Device != "desk" {
			return fmt.Errorf("presence %+v", p)
		}
		return nil
	})
	_ = desk.Close()
	waitFor(t, "alice offline", func() error {
		if p := h.presence(appA, "alice"); p.Online || len(p.Devices) != 0 {
			return fmt.Errorf("presence %+v", p)
		}
		return nil
	})
}

// TestKick kicks one device of a user, then the whole user.
func TestKick(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	tok := h.token(appA, "alice")
	phone := h.connect(wsBinary, "phone", tok, "phone")
	desk := h.connect(rawTCP, "desk", tok, "desk")
	tab := h.connect(wsJSON, "tab", tok, "tab")
	bob := h.connect(wsBinary, "bob", h.token(appA, "bob"), "phone")

	var k struct {
		Kicked int `json:"kicked"`
	}
	h.apiOK("POST", "/v1/apps/app-a/users/alice/kick", keyA, map[string]string{"device": "phone", "reason": "stolen phone"}, &k)
	if k.Kicked != 1 {
		t.Fatalf("kick of one device: kicked %d; want 1", k.Kicked)
	}
	if d := phone.expectDisconnect(protocol.DisconnectKicked); d.Reason != "stolen phone" {
		t.Fatalf("kick reason %q; want %q", d.Reason, "stolen phone")
	}
	// The other devices stay.
	if r := h.pushUser(appA, "alice", "still here"); r.Connections != 2 {
		t.Fatalf("push after kicking one device: %+v; want 2 connections", r)
	}
	desk.expectPush("u:alice", []byte(`"still here"`))
	tab.expectPush("u:alice", []byte(`"still here"`))

	// Kick the whole user, without a body.
	h.apiOK("POST", "/v1/apps/app-a/users/alice/kick", keyA, nil, &k)
	if k.Kicked != 2 {
		t.Fatalf("kick of a user: kicked %d; want 2", k.Kicked)
	}
	for _, c := range []*tconn{desk, tab} {
		if d := c.expectDisconnect(protocol.DisconnectKicked); d.Reason != protocol.DisconnectKicked.String() {
			t.Fatalf("%s: kick reason %q; want the default %q", c.name, d.Reason, protocol.DisconnectKicked.String())
		}
	}
	h.waitDisconnects(protocol.DisconnectKicked, 3)
	if r := h.pushUser(appA, "alice", "gone"); r.Connections != 0 {
		t.Fatalf("push after kicking the user: %+v; want 0 connections", r)
	}
	waitFor(t, "alice to leave the presence", func() error {
		if p := h.presence(appA, "alice"); p.Online {
			return fmt.Errorf("presence %+v", p)
		}
		return nil
	})
	// A second kick finds nothing to close, not even connections still
	// closing.
	h.apiOK("POST", "/v1/apps/app-a/users/alice/kick", keyA, nil, &k)
	if k.Kicked != 0 {
		t.Fatalf("second kick: kicked %d; want 0", k.Kicked)
	}
	// Other users are untouched; kicking someone offline kicks nobody.
	h.pushUser(appA, "bob", "hi bob")
	bob.expectPush("u:bob", []byte(`"hi bob"`))
	h.apiOK("POST", "/v1/apps/app-a/users/nobody/kick", keyA, map[string]string{}, &k)
	if k.Kicked != 0 {
		t.Fatalf("kick of an offline user: kicked %d", k.Kicked)
	}
	// App B cannot kick app A's bob, even with the same user name in B.
	h.apiOK("POST", "/v1/apps/app-b/users/bob/kick", keyB, nil, &k)
	if k.Kicked != 0 {
		t.Fatalf("app B kicked %d of app A's connections", k.Kicked)
	}
	bob.ping(1)
}

// TestStatsMetricsHealth checks GET /v1/stats, GET /metrics and /healthz.
func TestStatsMetricsHealth(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	a := h.connect(wsBinary, "a", h.token(appA, "alice", "*"), "d")
	b := h.connect(rawTCP, "b", h.token(appA, "bob"), "d")
	a.subscribe(1, "news")
	h.pushUser(appA, "alice", 1)
	a.expectPush("u:alice", []byte("1"))
	h.apiOK("POST", "/v1/apps/app-a/users/bob/kick", keyA, nil, nil)
	b.expectDisconnect(protocol.DisconnectKicked)
	h.waitOpen(1)

	var st struct {
		Node        string `json:"node"`
		Connections struct {
			Open        int64             `json:"open"`
			Accepted    uint64            `json:"accepted"`
			FramesIn    uint64            `json:"frames_in"`
			FramesOut   uint64            `json:"frames_out"`
			Disconnects map[string]uint64 `json:"disconnects"`
		} `json:"connections"`
		Routing struct {
			Users         int64 `json:"users"`
			Subscriptions int64 `json:"subscriptions"`
		} `json:"routing"`
		Sessions struct {
			Sessions int `json:"sessions"`
		} `json:"sessions"`
	}
	waitFor(t, "stats to show one session", func() error {
		h.apiOK("GET", "/v1/stats", keyB, nil, &st) // any app's key will do
		if st.Sessions.Sessions != 1 || st.Routing.Users != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
	c := st.Connections
	if st.Node != testNode || c.Open != 1 || c.Accepted != 2 || c.FramesIn < 3 || c.FramesOut < 4 ||
		c.Disconnects["kicked"] != 1 || c.Disconnects["normal"] != 0 || st.Routing.Subscriptions != 1 {
		t.Fatalf("stats %+v", st)
	}
	h.apiError("GET", "/v1/stats", "", nil, http.StatusUnauthorized, "unauthorized")
	h.apiError("GET", "/v1/stats", "not-a-key-0123456789", nil, http.StatusUnauthorized, "unauthorized")

	status, raw := h.apiCall("GET", "/metrics", "", nil)
	metrics := string(raw)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics: %d", status)
	}
	for _, want := range []string{
		"\nherald_connections 1\n",
		"\nherald_connections_accepted_total 2\n",
		"\nherald_disconnects_total{reason=\"kicked\"} 1\n",
		"\nherald_disconnects_total{reason=\"slow consumer\"} 0\n",
		"\nherald_sessions 1\n",
		"\nherald_subscriptions 1\n",
		"herald_api_request_duration_seconds_count{route=\"POST /v1/apps/{app}/users/{user}/kick\",status=\"200\"} 1\n",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("GET /metrics lacks %q", strings.TrimSpace(want))
		}
	}
	// Every disconnect reason has a series from the start.
	for _, code := range protocol.AllDisconnectCodes() {
		if !strings.Contains(metrics, fmt.Sprintf("herald_disconnects_total{reason=%q}", code.String())) {
			t.Errorf("GET /metrics has no series for reason %q", code)
		}
	}

	status, raw = h.apiCall("GET", "/healthz", "", nil)
	if status != http.StatusOK || strings.TrimSpace(string(raw)) != `{"status":"ok"}` {
		t.Fatalf("GET /healthz: %d %s", status, raw)
	}

	// A single node lists itself as the cluster.
	var cl struct {
		Node  string `json:"node"`
		Nodes []struct {
			ID string `json:"id"`
		} `json:"nodes"`
	}
	h.apiOK("GET", "/v1/cluster", keyA, nil, &cl)
	if cl.Node != testNode || len(cl.Nodes) != 1 || cl.Nodes[0].ID != testNode {
		t.Fatalf("GET /v1/cluster: %+v", cl)
	}
	h.apiError("GET", "/v1/cluster", "", nil, http.StatusUnauthorized, "unauthorized")
}

// TestAPIErrors checks that every mistake gets its 4xx status and a JSON
// error body, and never a 500.
func TestAPIErrors(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.MaxRecipients = 3 })
	max := h.cfg.MaxPayload
	long := strings.Repeat("x", 129)
	cases := []struct {
		name         string
		method, path string
		key          string
		body         any
		status       int
		code         string
	}{
		{"unknown app", "POST", "/v1/apps/nope/users/alice/messages", keyA, `{"data":1}`, 404, "unknown_app"},
		{"unknown app presence", "GET", "/v1/apps/nope/users/alice/presence", keyA, nil, 404, "unknown_app"},
		{"missing key", "POST", "/v1/apps/app-a/users/alice/messages", "", `{"data":1}`, 401, "unauthorized"},
		{"bad key", "POST", "/v1/apps/app-a/broadcast", "no-such-key-0123456789", `{"data":1}`, 401, "unauthorized"},
		{"other app's key", "POST", "/v1/apps/app-a/users/alice/messages", keyB, `{"data":1}`, 403, "forbidden"},
		{"other app's key kick", "POST", "/v1/apps/app-b/users/alice/kick", keyA, nil, 403, "forbidden"},
		{"malformed json", "POST", "/v1/apps/app-a/users/alice/messages", keyA, `{"data":`, 400, "bad_json"},
		{"not an object", "POST", "/v1/apps/app-a/topics/news/messages", keyA, `[1,2]`, 400, "bad_json"},
		{"unknown field", "POST", "/v1/apps/app-a/broadcast", keyA, `{"dta":1}`, 400, "bad_json"},
		{"trailing data", "POST", "/v1/apps/app-a/broadcast", keyA, `{"data":1} {"data":2}`, 400, "bad_json"},
		{"trailing brace", "POST", "/v1/apps/app-a/broadcast", keyA, `{"data":1}}`, 400, "bad_json"},
		{"trailing bracket", "POST", "/v1/apps/app-a/users/alice/kick", keyA, `{} ]`, 400, "bad_json"},
		{"empty body", "POST", "/v1/apps/app-a/broadcast", keyA, ``, 400, "bad_json"},
		{"no payload", "POST", "/v1/apps/app-a/users/alice/messages", keyA, `{}`, 400, "bad_payload"},
		{"data and b64", "POST", "/v1/apps/app-a/users/alice/messages", keyA, `{"data":1,"b64":"AA=="}`, 400, "bad_payload"},
		{"bad b64", "POST", "/v1/apps/app-a/users/alice/messages", keyA, `{"b64":"!!!"}`, 400, "bad_payload"},
		{"bad id", "POST", "/v1/apps/app-a/users/alice/messages", keyA, `{"id":"two words","data":1}`, 400, "bad_id"},
		{"data over max_payload", "POST", "/v1/apps/app-a/users/alice/messages", keyA,
			map[string]string{"data": strings.Repeat("a", max-1)}, 413, "payload_too_large"}, // + 2 quotes
		{"b64 over max_payload", "POST", "/v1/apps/app-a/topics/news/messages", keyA,
			map[string]string{"b64": base64.StdEncoding.EncodeToString(make([]byte, max+1))}, 413, "payload_too_large"},
		{"broadcast over max_payload", "POST", "/v1/apps/app-a/broadcast", keyA,
			map[string]string{"b64": base64.StdEncoding.EncodeToString(make([]byte, max+1))}, 413, "payload_too_large"},
		{"body too large", "POST", "/v1/apps/app-a/broadcast", keyA,
			map[string]string{"data": strings.Repeat("a", 4*max)}, 413, "body_too_large"},
		{"too many recipients", "POST", "/v1/apps/app-a/messages", keyA,
			map[string]any{"users": []string{"a", "b", "c", "d"}, "data": 1}, 413, "too_many_recipients"},
		{"too many presence", "POST", "/v1/apps/app-a/presence", keyA,
			map[string]any{"users": []string{"a", "b", "c", "d"}}, 413, "too_many_recipients"},
		{"no recipients", "POST", "/v1/apps/app-a/messages", keyA, map[string]any{"users": []string{}, "data": 1}, 400, "no_recipients"},
		{"bad user in path", "POST", "/v1/apps/app-a/users/bad%20user/messages", keyA, `{"data":1}`, 400, "bad_name"},
		{"control char in user", "POST", "/v1/apps/app-a/users/bad%07user/messages", keyA, `{"data":1}`, 400, "bad_name"},
		{"long user", "POST", "/v1/apps/app-a/users/" + long + "/messages", keyA, `{"data":1}`, 400, "bad_name"},
		{"bad user in list", "POST", "/v1/apps/app-a/messages", keyA, map[string]any{"users": []string{"ok", ""}, "data": 1}, 400, "bad_name"},
		{"bad user presence", "GET", "/v1/apps/app-a/users/a%20b/presence", keyA, nil, 400, "bad_name"},
		{"bad user presence list", "POST", "/v1/apps/app-a/presence", keyA, map[string]any{"users": []string{"a b"}}, 400, "bad_name"},
		{"bad user kick", "POST", "/v1/apps/app-a/users/a%20b/kick", keyA, nil, 400, "bad_name"},
		{"bad topic", "POST", "/v1/apps/app-a/topics/a%09b/messages", keyA, `{"data":1}`, 400, "bad_name"},
		{"long topic", "POST", "/v1/apps/app-a/topics/" + long + "/messages", keyA, `{"data":1}`, 400, "bad_name"},
		{"long kick reason", "POST", "/v1/apps/app-a/users/alice/kick", keyA, map[string]string{"reason": strings.Repeat("r", 257)}, 400, "bad_reason"},
		{"bad kick body", "POST", "/v1/apps/app-a/users/alice/kick", keyA, `{"device":`, 400, "bad_json"},
		{"unknown endpoint", "GET", "/v1/nothing", keyA, nil, 404, "not_found"},
		{"wrong method", "GET", "/v1/apps/app-a/broadcast", keyA, nil, 405, "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h.withT(t).apiError(tc.method, tc.path, tc.key, tc.body, tc.status, tc.code)
		})
	}

	// The largest payload allowed goes through.
	var r pushResult
	h.apiOK("POST", "/v1/apps/app-a/users/alice/messages", keyA,
		map[string]string{"b64": base64.StdEncoding.EncodeToString(make([]byte, max))}, &r)
	h.apiOK("POST", "/v1/apps/app-a/users/alice/messages", keyA,
		map[string]string{"data": strings.Repeat("a", max-2)}, &r)
	// The X-API-Key header is an alternative to Authorization.
	req, _ := http.NewRequest("GET", h.srv.APIURL()+"/v1/apps/app-a/users/alice/presence", nil)
	req.Header.Set("X-API-Key", keyA)
	resp, err := h.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("X-API-Key: status %d", resp.StatusCode)
	}
	// None of this was a 500.
	status, raw := h.apiCall("GET", "/metrics", "", nil)
	if status != 200 {
		t.Fatalf("GET /metrics: %d", status)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "herald_api_request_duration_seconds_count") && strings.Contains(line, `status="5`) {
			t.Errorf("a request failed with a 5xx: %s", line)
		}
	}
	if !slices.ContainsFunc(strings.Split(string(raw), "\n"), func(l string) bool {
		return strings.Contains(l, `status="413"`)
	}) {
		t.Errorf("metrics count no 413")
	}
}
