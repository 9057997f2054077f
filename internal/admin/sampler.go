package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Counters are a node's cumulative counters at one moment; the sampler
// turns two of them into a Sample of rates.
type Counters struct {
	Time        time.Time
	Node        string
	Connections int64
	Accepted    uint64            // connections accepted
	Disconnects map[string]uint64 // by reason
	Refused     map[string]uint64 // connections refused, by reason
	APIRequests uint64
	APIErrors   uint64 // answered 5xx, or 429
	Published   uint64 // messages accepted (push, publish, broadcast)
	Deliveries  uint64 // messages written to connections
	// Latency is the delivery latency since the previous Counters (nil:
	// nothing delivered).
	Latency      *Quantiles
	Queues       map[string]int64  // depths now
	Events       map[string]uint64 // cumulative counts of lag and loss signals (fan-out overflows, gaps filled, ...)
	StoreHealthy bool
	StoreError   string
	Cluster      *ClusterHealth
	Apps         map[string]AppCounters
	Switches     any // the switches in force ([]switches.State)
	Draining     bool
}

// AppCounters are one app's cumulative counters.
type AppCounters struct {
	Connections int64
	APIRequests uint64
	APIErrors   uint64
	RateLimited uint64
	Published   uint64
	Deliveries  uint64
	Latency     *Quantiles // since the previous Counters
}

// Quantiles are delivery latency quantiles in milliseconds.
type Quantiles struct {
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
}

// ClusterHealth is the cluster's part of a Sample.
type ClusterHealth struct {
	BrokerHealthy   bool `json:"broker_healthy"`
	RegistryHealthy bool `json:"registry_healthy"`
	Nodes           int  `json:"nodes"`
}

// Sample is one second of a node, as the dashboard shows it.
type Sample struct {
	T               int64              `json:"t"` // unix ms
	Node            string             `json:"node"`
	Connections     int64              `json:"connections"`
	ConnectsPerS    float64            `json:"connects_per_s"`
	DisconnectsPerS map[string]float64 `json:"disconnects_per_s"`
	RefusedPerS     map[string]float64 `json:"refused_per_s"`
	APIPerS         float64            `json:"api_per_s"`
	APIErrorsPerS   float64            `json:"api_errors_per_s"`
	PublishedPerS   float64            `json:"published_per_s"`
	DeliveriesPerS  float64            `json:"deliveries_per_s"`
	LatencyMs       *Quantiles         `json:"latency_ms"`
	Queues          map[string]int64   `json:"queues"`
	EventsPerS      map[string]float64 `json:"events_per_s"`
	Store           storeHealth        `json:"store"`
	Cluster         *ClusterHealth     `json:"cluster"`
	Apps            []AppSample        `json:"apps"`
	Switches        any                `json:"switches"`
	Draining        bool               `json:"draining"`
}

type storeHealth struct {
	Healthy bool   `json:"healthy"`
	Error   string `json:"error"`
}

// AppSample is one app's second.
type AppSample struct {
	App             string     `json:"app"`
	Connections     int64      `json:"connections"`
	APIPerS         float64    `json:"api_per_s"`
	APIErrorsPerS   float64    `json:"api_errors_per_s"`
	PublishedPerS   float64    `json:"published_per_s"`
	DeliveriesPerS  float64    `json:"deliveries_per_s"`
	LatencyMs       *Quantiles `json:"latency_ms"`
	RateLimitedPerS float64    `json:"rate_limited_per_s"`
}

// Sampler reads Counters at an interval and keeps the last samples.
type Sampler struct {
	read     func() Counters
	interval time.Duration
	keep     int

	mu   sync.Mutex
	last *Sample           // the newest sample, nil before the first
	ring []json.RawMessage // oldest first
	subs map[chan json.RawMessage]struct{}
	prev Counters

	startOnce sync.Once
	stop      chan struct{}
	done      chan struct{}
}

// NewSampler returns a sampler of read every interval, keeping keep
// samples; Start starts it.
func NewSampler(read func() Counters, interval time.Duration, keep int) *Sampler {
	return &Sampler{read: read, interval: interval, keep: keep, subs: map[chan json.RawMessage]struct{}{},
		stop: make(chan struct{}), done: make(chan struct{})}
}

// Start starts sampling; calls after the first do nothing.
func (s *Sampler) Start() {
	s.startOnce.Do(func() {
		s.prev = s.read()
		go s.run()
	})
}

// Close stops the sampler and ends the streams. A sampler never
// started cannot start after it.
func (s *Sampler) Close() {
	s.startOnce.Do(func() { close(s.done) }) // never started: nothing runs
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}

func (s *Sampler) run() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			s.mu.Lock()
			for c := range s.subs {
				close(c)
				delete(s.subs, c)
			}
			s.mu.Unlock()
			return
		case <-t.C:
			s.tick()
		}
	}
}

// tick takes one sample and sends it to every stream.
func (s *Sampler) tick() {
	cur := s.read()
	sample := rates(s.prev, cur)
	data, err := json.Marshal(sample)
	s.prev = cur
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = &sample
	s.ring = append(s.ring, data)
	if len(s.ring) > s.keep {
		s.ring = s.ring[len(s.ring)-s.keep:]
	}
	for c := range s.subs {
		select {
		case c <- data:
		default: // a slow dashboard misses a second
		}
	}
}

// Latest returns the newest sample; false before the first.
func (s *Sampler) Latest() (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		return Sample{}, false
	}
	return *s.last, true
}

// subscribe returns the samples kept and a channel of the next ones.
func (s *Sampler) subscribe() ([]json.RawMessage, chan json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := make(chan json.RawMessage, 8)
	s.subs[c] = struct{}{}
	return append([]json.RawMessage(nil), s.ring...), c
}

func (s *Sampler) unsubscribe(c chan json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.subs[c]; ok {
		delete(s.subs, c)
		close(c)
	}
}

// rates turns two Counters into a Sample.
func rates(prev, cur Counters) Sample {
	secs := cur.Time.Sub(prev.Time).Seconds()
	if secs <= 0 {
		secs = 1
	}
	rate := func(a, b uint64) float64 {
		if b < a {
			return 0
		}
		return float64(b-a) / secs
	}
	byReason := func(a, b map[string]uint64) map[string]float64 {
		out := map[string]float64{}
		for k, v := range b {
			if r := rate(a[k], v); r > 0 {
				out[k] = r
			}
		}
		return out
	}
	out := Sample{
		T: cur.Time.UnixMilli(), Node: cur.Node, Connections: cur.Connections,
		ConnectsPerS:    rate(prev.Accepted, cur.Accepted),
		DisconnectsPerS: byReason(prev.Disconnects, cur.Disconnects),
		RefusedPerS:     byReason(prev.Refused, cur.Refused),
		APIPerS:         rate(prev.APIRequests, cur.APIRequests),
		APIErrorsPerS:   rate(prev.APIErrors, cur.APIErrors),
		PublishedPerS:   rate(prev.Published, cur.Published),
		DeliveriesPerS:  rate(prev.Deliveries, cur.Deliveries),
		LatencyMs:       cur.Latency,
		Queues:          cur.Queues,
		EventsPerS:      byReason(prev.Events, cur.Events),
		Store:           storeHealth{Healthy: cur.StoreHealthy, Error: cur.StoreError},
		Cluster:         cur.Cluster,
		Switches:        cur.Switches,
		Draining:        cur.Draining,
		Apps:            []AppSample{},
	}
	if out.Queues == nil {
		out.Queues = map[string]int64{}
	}
	for app, c := range cur.Apps {
		p := prev.Apps[app]
		out.Apps = append(out.Apps, AppSample{App: app, Connections: c.Connections,
			APIPerS: rate(p.APIRequests, c.APIRequests), APIErrorsPerS: rate(p.APIErrors, c.APIErrors),
			PublishedPerS: rate(p.Published, c.Published), DeliveriesPerS: rate(p.Deliveries, c.Deliveries),
			LatencyMs: c.Latency, RateLimitedPerS: rate(p.RateLimited, c.RateLimited)})
	}
	sort.Slice(out.Apps, func(i, j int) bool { return out.Apps[i].App < out.Apps[j].App })
	return out
}

// samples answers GET /admin/v1/samples: the samples kept, oldest first.
func (h *Handler) samples(w http.ResponseWriter, _ *http.Request) {
	ring, c := h.sampler.subscribe()
	h.sampler.unsubscribe(c)
	writeJSON(w, http.StatusOK, map[string]any{"interval_ms": h.sampler.interval.Milliseconds(), "samples": ring})
}

// stream answers GET /admin/v1/stream with server-sent events: "history"
// (the samples kept), then a "sample" every interval.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "no_streaming", "this connection cannot stream")
		return
	}
	// The API's body deadline does not apply to a GET without a body;
	// the write deadline of a long stream is lifted here.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{})
	ring, c := h.sampler.subscribe()
	defer h.sampler.unsubscribe(c)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	hist, _ := json.Marshal(map[string]any{"interval_ms": h.sampler.interval.Milliseconds(), "samples": ring})
	if _, err := fmt.Fprintf(w, "event: history\ndata: %s\n\n", hist); err != nil {
		return
	}
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case data, ok := <-c:
			if !ok {
				return
			}
			if _, err := fmt.Fprintf(w, "event: sample\ndata: %s\n\n", data); err != nil {
				return
			}
			fl.Flush()
		}
	}
}
