package server

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/appstats"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/metrics"
)

// latencyCount returns the delivery-latency observations of app.
func latencyCount(s metrics.LatencySnapshot, app string) uint64 {
	var n uint64
	for _, c := range s.Apps[app] {
		n += c
	}
	return n
}

// pushLive pushes to user, connected as c, until a push reaches c live,
// which the delivery-latency histogram of app observes: the first ones
// may reach the device through its inbox catch-up, which is not observed.
// It returns how many pushes it took.
func (h *harness) pushLive(c *tconn, app, user string) int {
	h.t.Helper()
	for i := 1; i <= 20; i++ {
		before := latencyCount(h.srv.DeliveryLatency(), app)
		h.apiOK("POST", "/v1/apps/"+app+"/users/"+user+"/messages", keyOf(app), map[string]any{"data": i}, nil)
		c.expectPush("u:"+user, []byte(strconv.Itoa(i)))
		// Observed once the write returns, which may be just after the
		// client reads it.
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if latencyCount(h.srv.DeliveryLatency(), app) > before {
				return i
			}
		}
	}
	h.t.Fatalf("20 pushes to %s and no delivery-latency observation", user)
	return 0
}

// metricsText returns GET /metrics.
func (h *harness) metricsText() string {
	h.t.Helper()
	status, raw := h.apiCall("GET", "/metrics", "", nil)
	if status != http.StatusOK {
		h.t.Fatalf("GET /metrics: %d", status)
	}
	return string(raw)
}

// TestDeliveryLatencyMetrics: a push to a connected client is one
// observation of kind inbox for its app, a publish to N subscribers is N
// of kind topic, a catch-up is none; the Go API and /metrics agree, and
// the per-app counters count the API calls and the accepted messages.
func TestDeliveryLatencyMetrics(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.HistorySize = 100 })
	a := h.connect(wsBinary, "alice", h.token(appA, "alice"), "d")
	pushes := h.pushLive(a, appA, "alice")
	if n := latencyCount(h.srv.DeliveryLatency(), appA); n != 1 {
		t.Fatalf("%d observations of %s after the first live push; want 1", n, appA)
	}
	if !strings.Contains(h.metricsText(), `herald_delivery_latency_seconds_bucket{app="app-a",kind="inbox",le="`) {
		t.Fatal("GET /metrics lacks herald_delivery_latency_seconds_bucket for app-a, kind inbox")
	}

	const subscribers = 3
	var subs []*tconn
	for i := range subscribers {
		tr := allTransports[i%len(allTransports)]
		user := fmt.Sprintf("s%d", i)
		c := h.connect(tr, user, h.token(appA, user, "news"), "d")
		c.subscribe(1, "news")
		subs = append(subs, c)
	}
	h.waitSubscribers(appA, "news", subscribers)
	if r := h.publish(appA, "news", "hello"); r.Subscribers != subscribers {
		t.Fatalf("publish reached %d subscribers; want %d", r.Subscribers, subscribers)
	}
	for _, c := range subs {
		c.expectPush("t:news", []byte(`"hello"`))
	}
	topicCount := fmt.Sprintf(`herald_delivery_latency_seconds_count{app="app-a",kind="topic"} %d`, subscribers)
	waitFor(t, "one topic observation per subscriber", func() error {
		if !strings.Contains(h.metricsText(), topicCount) {
			return fmt.Errorf("GET /metrics lacks %s", topicCount)
		}
		return nil
	})

	// A message stored for a device that is away is delivered by its
	// catch-up: accepted, but no delivery latency.
	h.pushUser(appA, "carol", 2)
	c := h.connect(rawTCP, "carol", h.token(appA, "carol"), "d")
	c.expectPush("u:carol", []byte("2"))
	h.apiError("POST", "/v1/apps/app-a/users/bad%20name/messages", keyA, map[string]any{"data": 1}, http.StatusBadRequest, "bad_name")

	lat := h.srv.DeliveryLatency()
	if n := latencyCount(lat, appA); n != 1+subscribers {
		t.Fatalf("%d observations of %s; want %d (the catch-up not counted)", n, appA, 1+subscribers)
	}
	if q, ok := lat.Quantile(appA, .99); !ok || q <= 0 || q > 10 {
		t.Fatalf("p99 of %s = %v, %v", appA, q, ok)
	}
	if _, ok := lat.Quantile(appB, .99); ok {
		t.Fatalf("p99 of %s without deliveries", appB)
	}
	counters := h.srv.AppCounters()
	got := counters[appA]
	want := metrics.AppCounters{APIRequests: uint64(pushes) + 3, Accepted: uint64(pushes) + 2, Deliveries: 1 + subscribers}
	if got != want {
		t.Fatalf("counters of %s = %+v; want %+v", appA, got, want)
	}
	if _, ok := counters[appB]; !ok {
		t.Fatalf("no counters for %s: %v", appB, counters)
	}
	text := h.metricsText()
	for _, want := range []string{
		fmt.Sprintf(`herald_app_api_requests_total{app="app-a",code_class="2xx"} %d`, pushes+2),
		`herald_app_api_requests_total{app="app-a",code_class="4xx"} 1`,
		fmt.Sprintf(`herald_app_messages_accepted_total{app="app-a",kind="inbox"} %d`, pushes+1),
		`herald_app_messages_accepted_total{app="app-a",kind="topic"} 1`,
		fmt.Sprintf(`herald_app_deliveries_total{app="app-a"} %d`, 1+subscribers),
	} {
		if !strings.Contains(text, want) {
			t.Errorf("GET /metrics lacks %s", want)
		}
	}
}

// TestDeliveryLatencyReloadLabels: an app added by a reload gets its own
// label at once, a removed one is no longer reported.
func TestDeliveryLatencyReloadLabels(t *testing.T) {
	t.Parallel()
	h := startServer(t)
	h.reloadWith(func(c *config.Config) {
		c.Apps = append(c.Apps[:1], config.App{ID: appC, Secret: secretC, APIKeys: []string{keyC}})
	})
	cc := h.connect(wsJSON, "carl", mint(t, appC, secretC, "carl", nil, time.Hour, time.Now()), "d")
	// The connection joins the app's broadcasts just after CONNECTED.
	sent := 0
	for r := (pushResult{}); r.Connections != 1; sent++ {
		if sent == 100 {
			t.Fatal("100 broadcasts and none reached the connection")
		}
		h.apiOK("POST", "/v1/apps/"+appC+"/broadcast", keyC, map[string]any{"data": "all"}, &r)
	}
	cc.expectPush("b", []byte(`"all"`))
	waitFor(t, "one broadcast observation for app-c", func() error {
		if n := latencyCount(h.srv.DeliveryLatency(), appC); n != 1 {
			return fmt.Errorf("%d observations", n)
		}
		return nil
	})
	counters := h.srv.AppCounters()
	if _, ok := counters[appB]; ok {
		t.Fatalf("removed %s still reported: %v", appB, counters)
	}
	if _, ok := counters[appstats.Other]; ok {
		t.Fatalf("%s reported without counts: %v", appstats.Other, counters)
	}
	if c, want := counters[appC], (metrics.AppCounters{APIRequests: uint64(sent), Accepted: uint64(sent), Deliveries: 1}); c != want {
		t.Fatalf("counters of %s = %+v; want %+v", appC, c, want)
	}
	if !strings.Contains(h.metricsText(), `herald_delivery_latency_seconds_count{app="app-c",kind="broadcast"} 1`) {
		t.Fatal("GET /metrics lacks the broadcast observation of app-c")
	}
}
