package server

// End-to-end tests of the admin API (issue 12 item 1): its own
// credential, status, connections, apps, limits, switches, drain, reload
// and profiling, and the dashboard's live stream.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

const adminToken = "admin-token-0123456789"

func withAdmin(c *config.Config) { c.Admin.Tokens = []string{adminToken} }

// TestAdminAuth: the admin API takes only its own tokens (not an app's
// API key), answers 401 with JSON otherwise, and is off (404) without
// tokens; the dashboard page itself needs none.
func TestAdminAuth(t *testing.T) {
	h := startServer(t, withAdmin)
	for _, key := range []string{"", keyA, "admin-token-012345678X"} {
		h.apiError("GET", "/admin/v1/status", key, nil, http.StatusUnauthorized, "unauthorized")
	}
	h.apiOK("GET", "/admin/v1/status", adminToken, nil, nil)
	// The admin token is no API key.
	h.apiError("GET", "/v1/stats", adminToken, nil, http.StatusUnauthorized, "unauthorized")
	h.apiError("GET", "/admin/v1/nothing", adminToken, nil, http.StatusNotFound, "not_found")
	status, body := h.apiCall("GET", "/admin/", "", nil)
	if status != http.StatusOK && status != http.StatusNotFound {
		t.Fatalf("GET /admin/: %d %s", status, body)
	}

	// Rotation: a reload adds a token, then removes the old one.
	cfg := h.srv.Config()
	cfg.Admin.Tokens = []string{adminToken, "admin-token-NEW-456789"}
	if _, err := h.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	h.apiOK("GET", "/admin/v1/status", "admin-token-NEW-456789", nil, nil)
	h.apiOK("GET", "/admin/v1/status", adminToken, nil, nil)
	cfg.Admin.Tokens = []string{"admin-token-NEW-456789"}
	if _, err := h.srv.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	h.apiError("GET", "/admin/v1/status", adminToken, nil, http.StatusUnauthorized, "unauthorized")

	off := startServer(t)
	off.apiError("GET", "/admin/v1/status", adminToken, nil, http.StatusNotFound, "admin_off")
}

// TestAdminViews: status, connections (filtered by app and user), apps
// and limits.
func TestAdminViews(t *testing.T) {
	h := startServer(t, withAdmin, func(c *config.Config) { c.Apps[0].Limits.APIRate = 100 })
	h.connect(wsBinary, "a1", h.token(appA, "ann"), "phone")
	h.connect(rawTCP, "a2", h.token(appA, "amy"), "phone")
	h.connect(wsJSON, "b1", h.token(appB, "bob"), "phone")

	var st struct {
		Node     string   `json:"node"`
		Healthy  bool     `json:"healthy"`
		Problems []string `json:"problems"`
		Apps     []string `json:"apps"`
		Started  int64    `json:"started"`
	}
	h.apiOK("GET", "/admin/v1/status", adminToken, nil, &st)
	if st.Node != testNode || !st.Healthy || len(st.Problems) != 0 || len(st.Apps) != 2 || st.Started == 0 {
		t.Fatalf("status = %+v", st)
	}
	type conns struct {
		Connections []struct {
			App, User, Device, Transport string
		} `json:"connections"`
		Truncated bool `json:"truncated"`
	}
	var all, a, ann, one conns
	h.apiOK("GET", "/admin/v1/connections", adminToken, nil, &all)
	h.apiOK("GET", "/admin/v1/connections?app="+appA, adminToken, nil, &a)
	h.apiOK("GET", "/admin/v1/connections?app="+appA+"&user=ann", adminToken, nil, &ann)
	h.apiOK("GET", "/admin/v1/connections?limit=1", adminToken, nil, &one)
	if len(all.Connections) != 3 || len(a.Connections) != 2 || len(ann.Connections) != 1 || ann.Connections[0].Transport != "ws" ||
		len(one.Connections) != 1 || !one.Truncated {
		t.Fatalf("connections: all %+v, app-a %+v, ann %+v, limit 1 %+v", all, a, ann, one)
	}
	h.apiError("GET", "/admin/v1/connections?limit=0", adminToken, nil, http.StatusBadRequest, "bad_limit")

	var apps struct {
		Apps []struct {
			ID          string         `json:"id"`
			Connections int64          `json:"connections"`
			APIKeys     int            `json:"api_keys"`
			Limits      map[string]int `json:"limits"`
		} `json:"apps"`
	}
	h.apiOK("GET", "/admin/v1/apps", adminToken, nil, &apps)
	if len(apps.Apps) != 2 || apps.Apps[0].ID != appA || apps.Apps[0].Connections != 2 || apps.Apps[1].Connections != 1 || apps.Apps[0].APIKeys != 1 {
		t.Fatalf("apps = %+v", apps)
	}
	_, raw := h.apiCall("GET", "/admin/v1/apps", adminToken, nil)
	if strings.Contains(string(raw), keyA) || strings.Contains(string(raw), secretA) {
		t.Fatal("GET /admin/v1/apps shows a key or a secret")
	}
	var lim struct {
		Connection map[string]int `json:"connection"`
		Apps       map[string]struct {
			APIRate int `yaml:"api_rate"`
		} `json:"apps"`
	}
	h.apiOK("GET", "/admin/v1/limits", adminToken, nil, &lim)
	if lim.Connection["frame_rate"] != h.cfg.FrameRate {
		t.Fatalf("limits = %+v", lim)
	}
}

// TestAdminSwitches: switches listed and flipped over HTTP, bad requests
// refused with JSON.
func TestAdminSwitches(t *testing.T) {
	h := startServer(t, withAdmin)
	type list struct {
		Names    []string `json:"names"`
		Apps     []string `json:"apps"`
		Switches []struct {
			Name, App, Source string
			On                bool
			Since             int64
		} `json:"switches"`
	}
	var l list
	h.apiOK("GET", "/admin/v1/switches", adminToken, nil, &l)
	if len(l.Names) != 6 || len(l.Apps) != 2 || len(l.Switches) != 0 {
		t.Fatalf("switches = %+v", l)
	}
	h.apiOK("PUT", "/admin/v1/switches", adminToken, map[string]any{"name": "presence_off", "app": appA, "on": true}, &l)
	if len(l.Switches) != 1 || l.Switches[0].Name != "presence_off" || l.Switches[0].App != appA || l.Switches[0].Source != "admin" || l.Switches[0].Since == 0 {
		t.Fatalf("after PUT: %+v", l)
	}
	h.apiError("GET", "/v1/apps/"+appA+"/users/ann/presence", keyA, nil, http.StatusServiceUnavailable, "switched_off")
	h.apiError("PUT", "/admin/v1/switches", adminToken, map[string]any{"name": "nope", "on": true}, http.StatusBadRequest, "bad_switch")
	h.apiError("PUT", "/admin/v1/switches", adminToken, map[string]any{"name": "pause", "app": "nope", "on": true}, http.StatusBadRequest, "bad_switch")
	h.apiError("PUT", "/admin/v1/switches", adminToken, map[string]any{"name": "pause"}, http.StatusBadRequest, "bad_request")
	h.apiError("PUT", "/admin/v1/switches", adminToken, `{"name":"pause","on":true,"extra":1}`, http.StatusBadRequest, "bad_json")
	h.apiOK("PUT", "/admin/v1/switches", adminToken, map[string]any{"name": "presence_off", "app": appA, "on": false}, &l)
	h.apiOK("GET", "/v1/apps/"+appA+"/users/ann/presence", keyA, nil, nil)
}

// TestAdminDrain: a draining node refuses new connections, asks open ones
// to reconnect (DISCONNECT shutdown), turns /healthz red, and takes
// connections again when the drain stops.
func TestAdminDrain(t *testing.T) {
	h := startServer(t, withAdmin)
	c := h.connect(wsBinary, "c", h.token(appA, "ann"), "phone")
	h.apiOK("POST", "/admin/v1/drain", adminToken, map[string]any{"on": true}, nil)
	c.expectDisconnect(protocol.DisconnectShutdown)
	status, hdr, code := h.wsStatus("127.0.0.1")
	if status != http.StatusServiceUnavailable || code != "draining" || hdr.Get("Retry-After") == "" {
		t.Fatalf("upgrade while draining: %d %q", status, code)
	}
	if status, body := h.apiCall("GET", "/healthz", "", nil); status != http.StatusServiceUnavailable || !strings.Contains(string(body), "draining") {
		t.Fatalf("/healthz while draining: %d %s", status, body)
	}
	var st struct {
		Draining bool `json:"draining"`
		Healthy  bool `json:"healthy"`
	}
	h.apiOK("GET", "/admin/v1/status", adminToken, nil, &st)
	if !st.Draining || st.Healthy {
		t.Fatalf("status while draining: %+v", st)
	}
	h.apiOK("POST", "/admin/v1/drain", adminToken, map[string]any{"on": false}, nil)
	h.connect(wsBinary, "back", h.token(appA, "ann"), "phone")
	h.apiOK("GET", "/healthz", "", nil, nil)
}

// TestAdminReload: POST /admin/v1/reload reads the configuration again;
// a bad one is refused whole with every problem listed.
func TestAdminReload(t *testing.T) {
	next := make(chan config.Config, 1)
	h := startServerWith(t, Options{LoadConfig: func() (config.Config, error) {
		c := <-next
		return c, c.Validate()
	}}, withAdmin)
	cfg := h.srv.Config()
	cfg.Switches = []string{"unread_off"}
	next <- cfg
	var ok struct {
		Changed []string `json:"changed"`
	}
	h.apiOK("POST", "/admin/v1/reload", adminToken, nil, &ok)
	if len(ok.Changed) != 1 || !strings.Contains(ok.Changed[0], "unread_off on") {
		t.Fatalf("reload answered %+v", ok)
	}
	bad := cfg
	bad.FrameRate = 0
	bad.Switches = []string{"nope"}
	bad.WS.Addr = "127.0.0.1:1"
	next <- bad
	status, body := h.apiCall("POST", "/admin/v1/reload", adminToken, nil)
	var refused struct {
		Error struct {
			Code     string   `json:"code"`
			Problems []string `json:"problems"`
		} `json:"error"`
	}
	_ = json.Unmarshal(body, &refused)
	if status != http.StatusUnprocessableEntity || refused.Error.Code != "reload_refused" || len(refused.Error.Problems) != 3 {
		t.Fatalf("bad reload: %d %s; want 422 reload_refused with 3 problems", status, body)
	}
	h.apiError("GET", "/v1/apps/"+appA+"/users/ann/unread?device=d", keyA, nil, http.StatusServiceUnavailable, "switched_off")
}

// TestAdminProfiling: the profiles are served only while profiling is on.
func TestAdminProfiling(t *testing.T) {
	h := startServer(t, withAdmin)
	h.apiError("GET", "/admin/v1/debug/pprof/heap", adminToken, nil, http.StatusConflict, "profiling_off")
	h.apiOK("POST", "/admin/v1/profiling", adminToken, map[string]any{"on": true}, nil)
	t.Cleanup(func() { h.apiOK("POST", "/admin/v1/profiling", adminToken, map[string]any{"on": false}, nil) })
	for _, p := range []string{"heap", "goroutine", "mutex?debug=1"} {
		if status, body := h.apiCall("GET", "/admin/v1/debug/pprof/"+p, adminToken, nil); status != http.StatusOK || len(body) == 0 {
			t.Fatalf("GET %s while on: %d", p, status)
		}
	}
	h.apiOK("POST", "/admin/v1/profiling", adminToken, map[string]any{"on": false}, nil)
	h.apiError("GET", "/admin/v1/debug/pprof/heap", adminToken, nil, http.StatusConflict, "profiling_off")
}

// TestAdminStream: the dashboard's stream sends the samples kept, then a
// sample a second whose figures follow the load.
func TestAdminStream(t *testing.T) {
	h := startServer(t, withAdmin)
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", h.srv.APIURL()+"/admin/v1/stream", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := h.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var last []byte // the last sample, for a failure's message
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	event := func() (string, []byte) {
		var name string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				name = v
			} else if v, ok := strings.CutPrefix(line, "data: "); ok {
				last = []byte(v)
				return name, last
			}
		}
		t.Fatalf("stream ended: %v; last sample %s", sc.Err(), last)
		return "", nil
	}
	if name, data := event(); name != "history" || !strings.Contains(string(data), `"interval_ms":1000`) {
		t.Fatalf("first event %s %s; want history", name, data)
	}
	c := h.connect(wsBinary, "c", h.token(appA, "ann"), "phone")
	h.flip("pause", appB, true)
	h.pushLive(c, appA, "ann") // until one is delivered live, with its latency
	// Wait for a sample that shows the connection, the switch and the
	// push (one API call, one message accepted and delivered, its latency).
	// The API call, the acceptance and the delivery may fall in two
	// samples.
	var sawAPI, sawPublished, sawDelivery, sawLatency bool
	for {
		name, data := event()
		var s struct {
			Connections int64                       `json:"connections"`
			APIPerS     float64                     `json:"api_per_s"`
			LatencyMs   *struct{ P50, P99 float64 } `json:"latency_ms"`
			Apps        []struct {
				App            string                      `json:"app"`
				Connections    int64                       `json:"connections"`
				PublishedPerS  float64                     `json:"published_per_s"`
				DeliveriesPerS float64                     `json:"deliveries_per_s"`
				LatencyMs      *struct{ P50, P99 float64 } `json:"latency_ms"`
			} `json:"apps"`
			Switches []struct{ Name, App string } `json:"switches"`
			Store    struct{ Healthy bool }       `json:"store"`
		}
		if name != "sample" {
			t.Fatalf("event %q", name)
		}
		if err := json.Unmarshal(data, &s); err != nil {
			t.Fatal(err)
		}
		if len(s.Apps) == 2 && s.Apps[0].App == appA {
			sawAPI = sawAPI || s.APIPerS > 0
			sawPublished = sawPublished || s.Apps[0].PublishedPerS > 0
			sawDelivery = sawDelivery || s.Apps[0].DeliveriesPerS > 0
			sawLatency = sawLatency || (s.LatencyMs != nil && s.LatencyMs.P99 > 0 && s.Apps[0].LatencyMs != nil)
		}
		if sawAPI && sawPublished && sawDelivery && sawLatency && s.Connections == 1 && len(s.Switches) == 1 && s.Switches[0].App == appB && s.Store.Healthy &&
			len(s.Apps) == 2 && s.Apps[0].App == appA && s.Apps[0].Connections == 1 {
			break
		}
		if err := ctx.Err(); err != nil {
			t.Fatal(errors.Join(err, fmt.Errorf("last sample %s", data)))
		}
	}
}
