// Package metrics defines Herald's Prometheus metrics and serves them.
// Counters owned by other packages are read from their Stats snapshots at
// scrape time, so the hot paths only ever bump atomics.
package metrics

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/node"
	"github.com/herald-push/herald/protocol"
)

// Sources are the snapshots the metrics are read from. Nil sources are skipped.
type Sources struct {
	Gateway func() gateway.Stats
	Hub     func() hub.Stats
	Node    func() node.Stats
	Store   func() StoreStats
	// Cluster is set on a node of a cluster.
	Cluster     func() ClusterStats
	LogsDropped func() uint64
	// APIRateLimited returns the server API's 429s per configured app.
	APIRateLimited func() map[string]RateLimited
	// Switches returns the degrade switches' state.
	Switches func() SwitchStats
}

// RateLimited counts an app's API requests refused for its quotas.
type RateLimited struct {
	API     uint64 // over api_rate
	Publish uint64 // over publish_rate (or publish_burst)
}

// ClusterStats is what a node of a cluster adds: its broker and registry.
type ClusterStats struct {
	BrokerUp      bool   // the broker carries messages (Health nil)
	RegistryUp    bool   // the presence registry answers
	Published     uint64 // messages sent toward other nodes
	PublishErrors uint64 // publishes that failed (the other nodes fill them from the store)
	Received      uint64 // messages that reached this node from others
	Dropped       uint64 // received messages dropped because handlers fell behind (then read from the store)
	Resyncs       uint64 // times the node compared its streams with the store after losses
	Reconnects    uint64 // reconnections to the broker
	Subjects      int64  // subjects this node has interest in
}

// StoreStats is the message store's state.
type StoreStats struct {
	Healthy        bool   `json:"-"`                  // the store takes writes
	LossesDetected uint64 `json:"data_loss_detected"` // opens that found acknowledged data missing and started a new epoch
	Reopens        uint64 `json:"reopens"`            // recoveries from a write failure
}

// Metrics holds the registry and the metrics that are observed directly.
type Metrics struct {
	reg *prometheus.Registry
	api *prometheus.HistogramVec
}

// New registers every metric on a fresh registry.
func New(src Sources) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(&snapshot{src: src})
	if src.Switches != nil {
		reg.MustRegister(switchCollector(src.Switches))
	}
	m := &Metrics{
		reg: reg,
		api: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "herald_api_request_duration_seconds",
			Help:    "Server API request latency by route and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"route", "status"}),
	}
	reg.MustRegister(m.api)
	return m
}

// ObserveAPI records one API request.
func (m *Metrics) ObserveAPI(route string, status int, d time.Duration) {
	m.api.WithLabelValues(route, strconv.Itoa(status)).Observe(d.Seconds())
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

var (
	descOpen        = prometheus.NewDesc("herald_connections", "Client connections open now.", nil, nil)
	descAccepted    = prometheus.NewDesc("herald_connections_accepted_total", "Client connections accepted.", nil, nil)
	descDisconnects = prometheus.NewDesc("herald_disconnects_total", "Closed client connections by reason.", []string{"reason"}, nil)
	descFramesIn    = prometheus.NewDesc("herald_frames_in_total", "Frames received from clients.", nil, nil)
	descFramesOut   = prometheus.NewDesc("herald_frames_out_total", "Frames written to clients.", nil, nil)
	descBytesOut    = prometheus.NewDesc("herald_bytes_out_total", "Bytes of frames written to clients.", nil, nil)
	descWrites      = prometheus.NewDesc("herald_writes_total", "Messages (write calls) to clients; frames_out/writes is the batching factor.", nil, nil)
	descDecodeErr   = prometheus.NewDesc("herald_decode_errors_total", "Client frames that failed to decode.", nil, nil)
	descOriginRef   = prometheus.NewDesc("herald_origin_refused_total", "WebSocket and SSE requests refused for their Origin (ws.allowed_origins).", nil, nil)
	descSessions    = prometheus.NewDesc("herald_sessions", "Authenticated sessions.", nil, nil)
	descUsers       = prometheus.NewDesc("herald_users_online", "Users with at least one local connection.", nil, nil)
	descTopics      = prometheus.NewDesc("herald_topics", "Topics (and app broadcast groups) with local subscribers.", nil, nil)
	descSubs        = prometheus.NewDesc("herald_subscriptions", "Topic subscriptions.", nil, nil)
	descPublished   = prometheus.NewDesc("herald_messages_published_total", "Topic and broadcast messages accepted for fan-out.", nil, nil)
	descDelivered   = prometheus.NewDesc("herald_deliveries_total", "Messages handed to connections.", nil, nil)
	descPasses      = prometheus.NewDesc("herald_fanout_passes_total", "Fan-out passes.", nil, nil)
	descDropped     = prometheus.NewDesc("herald_fanout_dropped_total", "Fan-out queue overflows: their subscribers were disconnected to recover from their positions.", nil, nil)
	descGaps        = prometheus.NewDesc("herald_stream_gaps_total", "Stream messages that reached the hub before one they follow (held, and filled from the store if it does not arrive).", nil, nil)
	descFilled      = prometheus.NewDesc("herald_stream_filled_total", "Stream messages read from the store to fill gaps.", nil, nil)
	descAcks        = prometheus.NewDesc("herald_acks_total", "ACK frames received.", nil, nil)
	descCaughtUp    = prometheus.NewDesc("herald_caught_up_total", "Stored inbox messages sent to devices on (re)connect.", nil, nil)
	descUndeliv     = prometheus.NewDesc("herald_undeliverable_total", "Inbox messages skipped for a device after too many redeliveries.", nil, nil)
	descRecovered   = prometheus.NewDesc("herald_recovered_total", "Topic and broadcast messages replayed to clients that resubscribed with a position.", nil, nil)
	descUnrecovered = prometheus.NewDesc("herald_unrecovered_total", "Recoveries answered \"cannot recover\" (history trimmed or expired, epoch changed, too much missed).", nil, nil)
	descStoreUp     = prometheus.NewDesc("herald_store_up", "1 while the message store takes writes, 0 while it refuses them (API writes answer 503).", nil, nil)
	descStoreLoss   = prometheus.NewDesc("herald_store_data_loss_detected_total", "Store opens that found acknowledged messages missing (a damaged log) and started a new epoch.", nil, nil)
	descStoreReopen = prometheus.NewDesc("herald_store_reopens_total", "Times the message store recovered from a write failure by reopening.", nil, nil)
	descBrokerUp    = prometheus.NewDesc("herald_broker_up", "1 while the broker carries messages between nodes, 0 while it cannot (outage, subscription not in place, losses not yet resynced).", nil, nil)
	descRegistryUp  = prometheus.NewDesc("herald_registry_up", "1 while the cluster's presence registry answers.", nil, nil)
	descBrokerPub   = prometheus.NewDesc("herald_broker_published_total", "Messages this node sent to other nodes through the broker.", nil, nil)
	descBrokerPubE  = prometheus.NewDesc("herald_broker_publish_errors_total", "Broker publishes that failed (other nodes read those messages from the store).", nil, nil)
	descBrokerRecv  = prometheus.NewDesc("herald_broker_received_total", "Messages from other nodes that reached this node.", nil, nil)
	descBrokerDrop  = prometheus.NewDesc("herald_broker_dropped_total", "Messages from other nodes dropped because this node fell behind (read from the store instead).", nil, nil)
	descBrokerRes   = prometheus.NewDesc("herald_broker_resyncs_total", "Times this node compared the streams it follows with the store after possible losses.", nil, nil)
	descBrokerRec   = prometheus.NewDesc("herald_broker_reconnects_total", "Reconnections to the broker.", nil, nil)
	descBrokerSubj  = prometheus.NewDesc("herald_broker_subjects", "Users, topics and apps this node hears from other nodes.", nil, nil)
	descRefused     = prometheus.NewDesc("herald_refused_connections_total", "Client connections refused by protection (address lists, per-address rate and flap bans, node-wide connection and memory bounds) and by apps' connection limits, by reason.", []string{"reason"}, nil)
	descAPILimited  = prometheus.NewDesc("herald_api_rate_limited_total", "Server API requests refused with 429 (or 413 over publish_burst) for their app's quotas, by app and limit (api, publish).", []string{"app", "limit"}, nil)
	descLogDropped  = prometheus.NewDesc("herald_log_records_dropped_total", "Log records dropped because the log writer fell behind.", nil, nil)
)

func boolGauge(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// snapshot is a collector over the Stats snapshots.
type snapshot struct{ src Sources }

func (s *snapshot) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descOpen, descAccepted, descDisconnects, descFramesIn, descFramesOut, descBytesOut,
		descWrites, descDecodeErr, descOriginRef, descSessions, descUsers, descTopics, descSubs, descPublished, descDelivered, descPasses,
		descDropped, descGaps, descFilled, descAcks, descCaughtUp, descUndeliv, descRecovered, descUnrecovered, descLogDropped,
		descStoreUp, descStoreLoss, descStoreReopen, descRefused} {
		ch <- d
	}
	if s.src.APIRateLimited != nil {
		ch <- descAPILimited
	}
	if s.src.Cluster != nil {
		for _, d := range []*prometheus.Desc{descBrokerUp, descRegistryUp, descBrokerPub, descBrokerPubE, descBrokerRecv,
			descBrokerDrop, descBrokerRes, descBrokerRec, descBrokerSubj} {
			ch <- d
		}
	}
}

func (s *snapshot) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	if s.src.Gateway != nil {
		g := s.src.Gateway()
		gauge(descOpen, g.Open)
		counter(descAccepted, g.Accepted)
		counter(descFramesIn, g.FramesIn)
		counter(descFramesOut, g.FramesOut)
		counter(descBytesOut, g.BytesOut)
		counter(descWrites, g.Writes)
		counter(descDecodeErr, g.DecodeErrors)
		counter(descOriginRef, g.OriginRefused)
		for _, code := range protocol.AllDisconnectCodes() {
			counter(descDisconnects, g.Disconnects[code], code.String())
		}
		var appLimit uint64
		if s.src.Node != nil {
			appLimit = s.src.Node().AppLimitRefused
		}
		for _, r := range gateway.RefusalReasons() {
			v := g.Refused[r]
			if r == gateway.RefusedAppLimit {
				v = appLimit
			}
			if r == gateway.RefusedSwitchedOff && s.src.Node != nil {
				v += s.src.Node().Degrade.Refused // per app, at CONNECT
			}
			counter(descRefused, v, r)
		}
	}
	if s.src.APIRateLimited != nil {
		for app, r := range s.src.APIRateLimited() {
			counter(descAPILimited, r.API, app, "api")
			counter(descAPILimited, r.Publish, app, "publish")
		}
	}
	if s.src.Hub != nil {
		h := s.src.Hub()
		gauge(descUsers, h.Users)
		gauge(descTopics, h.Topics)
		gauge(descSubs, h.Subscriptions)
		counter(descPublished, h.Published)
		counter(descDelivered, h.Delivered)
		counter(descPasses, h.Passes)
		counter(descDropped, h.Dropped)
		counter(descGaps, h.Gaps)
		counter(descFilled, h.Filled)
	}
	if s.src.Node != nil {
		n := s.src.Node()
		gauge(descSessions, int64(n.Sessions))
		counter(descAcks, n.Acks)
		counter(descCaughtUp, n.CaughtUp)
		counter(descUndeliv, n.Undeliverable)
		counter(descRecovered, n.Recovered)
		counter(descUnrecovered, n.Unrecovered)
	}
	if s.src.Store != nil {
		st := s.src.Store()
		up := int64(0)
		if st.Healthy {
			up = 1
		}
		gauge(descStoreUp, up)
		counter(descStoreLoss, st.LossesDetected)
		counter(descStoreReopen, st.Reopens)
	}
	if s.src.Cluster != nil {
		c := s.src.Cluster()
		gauge(descBrokerUp, boolGauge(c.BrokerUp))
		gauge(descRegistryUp, boolGauge(c.RegistryUp))
		counter(descBrokerPub, c.Published)
		counter(descBrokerPubE, c.PublishErrors)
		counter(descBrokerRecv, c.Received)
		counter(descBrokerDrop, c.Dropped)
		counter(descBrokerRes, c.Resyncs)
		counter(descBrokerRec, c.Reconnects)
		gauge(descBrokerSubj, c.Subjects)
	}
	if s.src.LogsDropped != nil {
		counter(descLogDropped, s.src.LogsDropped())
	}
}
