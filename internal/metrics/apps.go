package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/herald-push/herald/internal/appstats"
)

// LatencySnapshot holds cumulative delivery-latency bucket counts.
type LatencySnapshot struct {
	Bounds []float64           // upper bounds in seconds, ascending (last bucket +Inf implied)
	Total  []uint64            // counts per bucket (len(Bounds)+1), all apps
	Apps   map[string][]uint64 // same, per app label
}

// Latency turns the recorder's snapshot into a LatencySnapshot: each
// app's kinds added up, and every app added up in Total.
func Latency(s appstats.Snapshot) LatencySnapshot {
	out := LatencySnapshot{Bounds: s.Bounds, Total: make([]uint64, len(s.Bounds)+1), Apps: make(map[string][]uint64, len(s.Apps))}
	for _, a := range s.Apps {
		if a.App == appstats.Other && quiet(a) {
			continue
		}
		counts := make([]uint64, len(s.Bounds)+1)
		for _, h := range a.Latency {
			for i, c := range h.Counts {
				counts[i] += c
				out.Total[i] += c
			}
		}
		out.Apps[a.App] = counts
	}
	return out
}

// Sub returns the counts observed after prev and up to s: s's counts less
// prev's, bucket by bucket (an app absent from prev keeps its counts; a
// count below prev's, which cumulative counts never are, gives 0).
func (s LatencySnapshot) Sub(prev LatencySnapshot) LatencySnapshot {
	sub := func(a, b []uint64) []uint64 {
		out := make([]uint64, len(a))
		for i, v := range a {
			if i < len(b) && b[i] <= v {
				v -= b[i]
			} else if i < len(b) {
				v = 0
			}
			out[i] = v
		}
		return out
	}
	out := LatencySnapshot{Bounds: s.Bounds, Total: sub(s.Total, prev.Total), Apps: make(map[string][]uint64, len(s.Apps))}
	for app, c := range s.Apps {
		out.Apps[app] = sub(c, prev.Apps[app])
	}
	return out
}

// Quantile estimates the q-quantile (0 <= q <= 1) of the delivery latency
// of app (all apps for ""), in seconds, by linear interpolation within
// the bucket it falls in, as Prometheus's histogram_quantile does: a
// quantile in the first bucket interpolates from 0, one in the +Inf
// bucket answers the highest bound. ok is false when there are no
// observations (or no such app).
func (s LatencySnapshot) Quantile(app string, q float64) (seconds float64, ok bool) {
	counts := s.Total
	if app != "" {
		if counts, ok = s.Apps[app]; !ok {
			return 0, false
		}
	}
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 || len(counts) != len(s.Bounds)+1 {
		return 0, false
	}
	q = min(max(q, 0), 1)
	rank := q * float64(total)
	var cum uint64
	for i, c := range counts {
		if c == 0 || float64(cum+c) < rank {
			cum += c
			continue
		}
		if i == len(s.Bounds) {
			return s.Bounds[len(s.Bounds)-1], true
		}
		lower := 0.0
		if i > 0 {
			lower = s.Bounds[i-1]
		}
		return lower + (s.Bounds[i]-lower)*(rank-float64(cum))/float64(c), true
	}
	return s.Bounds[len(s.Bounds)-1], true // q = 1 past the last count
}

// quiet reports whether a counted nothing.
func quiet(a appstats.App) bool {
	if a.RateLimited != 0 {
		return false
	}
	for k := range appstats.Kinds {
		if a.Accepted[k] != 0 || a.Latency[k].Count() != 0 {
			return false
		}
	}
	for _, n := range a.API {
		if n != 0 {
			return false
		}
	}
	return true
}

// AppCounters are one app's cumulative counters.
type AppCounters struct {
	APIRequests uint64 // server API requests naming the app, every status
	APIErrors   uint64 // those answered with a status >= 500
	RateLimited uint64 // those answered 429 (the app's api_rate or publish_rate)
	Accepted    uint64 // messages stored and handed out: pushes (one per user), publishes, broadcasts
	Deliveries  uint64 // accepted messages written to connections (one per connection; catch-ups and recoveries not included)
}

// Counters returns the recorder's counters by app label.
func Counters(s appstats.Snapshot) map[string]AppCounters {
	out := make(map[string]AppCounters, len(s.Apps))
	for _, a := range s.Apps {
		if a.App == appstats.Other && quiet(a) {
			continue
		}
		var c AppCounters
		for i, n := range a.API {
			c.APIRequests += n
			if i >= 4 {
				c.APIErrors += n
			}
		}
		c.RateLimited = a.RateLimited
		for k := range appstats.Kinds {
			c.Accepted += a.Accepted[k]
			c.Deliveries += a.Latency[k].Count()
		}
		out[a.App] = c
	}
	return out
}

var (
	descLatency     = prometheus.NewDesc("herald_delivery_latency_seconds", "Time from a message accepted (stored and handed to the hub; relayed messages: reached this node) to its write to a connection's socket, by kind (inbox, topic, broadcast) and app. Catch-ups and recoveries are not included.", []string{"kind", "app"}, nil)
	descAppAPI      = prometheus.NewDesc("herald_app_api_requests_total", "Server API requests naming a configured app, by app and status class (2xx, 4xx, 5xx ...); 429s are also in herald_api_rate_limited_total.", []string{"app", "code_class"}, nil)
	descAppAccepted = prometheus.NewDesc("herald_app_messages_accepted_total", "Messages accepted (stored and handed out) by app and kind: pushes (one per user), publishes, broadcasts.", []string{"app", "kind"}, nil)
	descAppDeliv    = prometheus.NewDesc("herald_app_deliveries_total", "Accepted messages written to connections by app (one per connection; catch-ups and recoveries not included).", []string{"app"}, nil)
)

// appCollector exports an appstats.Recorder.
type appCollector struct{ snap func() appstats.Snapshot }

func (c appCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descLatency, descAppAPI, descAppAccepted, descAppDeliv} {
		ch <- d
	}
}

// Collect exports every reported app's counters; a latency series (app
// and kind) appears once it has counts, and so do the 1xx and 3xx
// classes, and Other's counters once it has any.
func (c appCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap()
	for _, a := range s.Apps {
		if a.App == appstats.Other && quiet(a) {
			continue
		}
		var delivered uint64
		for k := range appstats.Kinds {
			kind := appstats.Kind(k).String()
			ch <- prometheus.MustNewConstMetric(descAppAccepted, prometheus.CounterValue, float64(a.Accepted[k]), a.App, kind)
			h := a.Latency[k]
			n := h.Count()
			delivered += n
			if n == 0 {
				continue
			}
			buckets := make(map[float64]uint64, len(s.Bounds))
			var cum uint64
			for i, b := range s.Bounds {
				cum += h.Counts[i]
				buckets[b] = cum
			}
			ch <- prometheus.MustNewConstHistogram(descLatency, n, h.Sum, buckets, kind, a.App)
		}
		ch <- prometheus.MustNewConstMetric(descAppDeliv, prometheus.CounterValue, float64(delivered), a.App)
		for i, n := range a.API {
			if n > 0 || i == 1 || i >= 3 { // 2xx, 4xx and 5xx always: alerts and ratios find their series
				ch <- prometheus.MustNewConstMetric(descAppAPI, prometheus.CounterValue, float64(n), a.App, strconv.Itoa(i+1)+"xx")
			}
		}
	}
}
