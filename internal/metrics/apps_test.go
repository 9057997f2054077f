package metrics

import (
	"math"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/appstats"
	"github.com/herald-push/herald/protocol"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

// TestQuantile checks the interpolation within buckets, the first and
// +Inf buckets, and the empty case.
func TestQuantile(t *testing.T) {
	s := LatencySnapshot{
		Bounds: []float64{.1, .2, .4},
		Total:  []uint64{10, 30, 60, 0},
		Apps:   map[string][]uint64{"a": {0, 0, 0, 4}, "b": {0, 0, 0, 0}},
	}
	for _, c := range []struct {
		app  string
		q    float64
		want float64
	}{
		{"", .05, .05},           // rank 5 of the first bucket's 10: half way from 0 to .1
		{"", .1, .1},             // the first bucket's top
		{"", .25, .15},           // rank 25: 15 of the second bucket's 30
		{"", .99, .2 + .2*59/60}, // rank 99: 59 of the third bucket's 60
		{"", 1, .4},
		{"a", .5, .4}, // +Inf: the highest bound
	} {
		got, ok := s.Quantile(c.app, c.q)
		if !ok || !near(got, c.want) {
			t.Errorf("Quantile(%q, %v) = %v, %v; want %v", c.app, c.q, got, ok, c.want)
		}
	}
	for _, app := range []string{"b", "nope"} {
		if _, ok := s.Quantile(app, .5); ok {
			t.Errorf("Quantile(%q) ok without observations", app)
		}
	}
}

// TestSub checks the difference of two snapshots.
func TestSub(t *testing.T) {
	prev := LatencySnapshot{Bounds: []float64{1}, Total: []uint64{3, 1}, Apps: map[string][]uint64{"a": {3, 1}}}
	cur := LatencySnapshot{Bounds: []float64{1}, Total: []uint64{5, 4}, Apps: map[string][]uint64{"a": {3, 2}, "b": {2, 2}}}
	d := cur.Sub(prev)
	if d.Total[0] != 2 || d.Total[1] != 3 || d.Apps["a"][0] != 0 || d.Apps["a"][1] != 1 || d.Apps["b"][0] != 2 || d.Apps["b"][1] != 2 {
		t.Fatalf("Sub = %+v", d)
	}
	if got, ok := d.Quantile("a", .5); !ok || got != 1 {
		t.Fatalf("Quantile of the difference = %v, %v; want the +Inf bucket's bound 1", got, ok)
	}
	// Counts below prev's (a snapshot from before a restart) give 0.
	if z := prev.Sub(cur); z.Total[0] != 0 || z.Total[1] != 0 {
		t.Fatalf("Sub of a larger snapshot = %+v", z)
	}
}

// TestAppMetrics checks the conversion of a recorder's counts into the
// Go API and the Prometheus series, with the labels bounded.
func TestAppMetrics(t *testing.T) {
	r := appstats.New([]string{"a", "b"})
	for _, k := range []appstats.Kind{appstats.Inbox, appstats.Topic, appstats.Topic} {
		e := protocol.Encode(&protocol.Frame{Type: protocol.TypePush})
		r.Accept(e, "a", k)
		at, tag := e.Stamp()
		e.SetStamp(at-int64(3*time.Millisecond), tag) // in (2.5 ms, 5 ms]
		r.Delivered([]*protocol.Encoded{e}, 7)
	}
	r.API("a", 200)
	r.API("a", 502)
	r.API("a", 429)

	lat := Latency(r.Snapshot())
	if len(lat.Apps) != 2 { // a and b; Other counted nothing
		t.Fatalf("apps %v", lat.Apps)
	}
	if q, ok := lat.Quantile("a", .5); !ok || q <= .0025 || q > .005 {
		t.Fatalf("p50 of a = %v, %v; want in (0.0025, 0.005]", q, ok)
	}
	if _, ok := lat.Quantile("b", .5); ok {
		t.Fatal("p50 of b without observations")
	}
	c := Counters(r.Snapshot())
	if want := (AppCounters{APIRequests: 3, APIErrors: 1, RateLimited: 1, Accepted: 3, Deliveries: 3}); c["a"] != want {
		t.Fatalf("counters of a = %+v; want %+v", c["a"], want)
	}
	if _, ok := c[appstats.Other]; ok {
		t.Fatal("Other reported without counts")
	}

	m := New(Sources{Apps: r.Snapshot})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`herald_delivery_latency_seconds_bucket{app="a",kind="topic",le="0.005"} 2`,
		`herald_delivery_latency_seconds_count{app="a",kind="inbox"} 1`,
		`herald_app_api_requests_total{app="a",code_class="5xx"} 1`,
		`herald_app_api_requests_total{app="b",code_class="2xx"} 0`,
		`herald_app_messages_accepted_total{app="a",kind="topic"} 2`,
		`herald_app_deliveries_total{app="a"} 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(body, `app="_other"`) || strings.Contains(body, `herald_delivery_latency_seconds_count{app="b"`) {
		t.Error("/metrics has series without counts")
	}
}
