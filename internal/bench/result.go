// Package bench is Herald's load generator: the scenarios behind
// `herald bench`, their worker processes, the merging of worker results, and
// the report. It talks to a server only through the wire protocol and the
// HTTP API, so it measures what users see.
package bench

import "time"

// Quantiles summarise a latency distribution.
type Quantiles struct {
	Count int64         `json:"count"`
	Min   time.Duration `json:"min_ns"`
	Mean  time.Duration `json:"mean_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
}

// Point is one interval of a run's timeline.
type Point struct {
	Second      int       `json:"t"`           // seconds since the run's start
	Deliveries  int64     `json:"deliveries"`  // messages received in the interval
	Sent        int64     `json:"sent"`        // messages (or requests) sent in the interval
	Errors      int64     `json:"errors"`      // failures in the interval
	Connections int64     `json:"connections"` // connections open at the end of the interval
	Latency     Quantiles `json:"latency"`     // of the messages received in the interval
}

// Result is what a scenario reports: merged over every worker.
type Result struct {
	Scenario string            `json:"scenario"`
	Params   map[string]string `json:"params"`
	Started  time.Time         `json:"started"`
	Duration time.Duration     `json:"duration_ns"`

	Connections int64            `json:"connections"`      // connections established
	ConnectRate float64          `json:"connect_rate"`     // connections per second during the ramp
	ConnectFail map[string]int64 `json:"connect_failures"` // by reason

	Sent       int64            `json:"sent"`       // messages or requests sent
	Delivered  int64            `json:"delivered"`  // messages received (first copies)
	Expected   int64            `json:"expected"`   // messages that should have been received
	Missing    int64            `json:"missing"`    // expected but never received
	Duplicates int64            `json:"duplicates"` // received more than once
	Errors     map[string]int64 `json:"errors"`     // by kind (HTTP status, disconnect reason, ...)
	Throughput float64          `json:"throughput"` // deliveries (or requests) per second
	Latency    Quantiles        `json:"latency"`    // publish-to-receive, or request latency

	ServerCPU        time.Duration `json:"server_cpu_ns"`         // server CPU time during the measured phase
	ServerCPUPerOp   time.Duration `json:"server_cpu_per_op_ns"`  // ServerCPU / Delivered (or / Sent)
	ServerRSSBefore  int64         `json:"server_rss_before"`     // bytes
	ServerRSSAfter   int64         `json:"server_rss_after"`      // bytes
	ServerRSSPerConn float64       `json:"server_rss_per_conn"`   // bytes
	RecoveryTime     time.Duration `json:"recovery_ns,omitempty"` // storm: drop until all back
	CatchUpTime      time.Duration `json:"catch_up_ns,omitempty"` // storm: drop until the last inbox message arrived

	// Storm inbox messages (pushed to users' durable inboxes while they are
	// away), also counted in Expected, Delivered, Missing and Duplicates.
	InboxExpected    int64 `json:"inbox_expected,omitempty"`    // accepted by the API (200)
	InboxDelivered   int64 `json:"inbox_delivered,omitempty"`   // of those, received by their user's device
	InboxMissing     int64 `json:"inbox_missing,omitempty"`     // accepted and never received
	InboxDuplicates  int64 `json:"inbox_duplicates,omitempty"`  // received again after an ACK that had been processed, or twice on one connection
	InboxRedelivered int64 `json:"inbox_redelivered,omitempty"` // received again on a new connection while its ACK may still have been in flight: allowed
	InboxUnconfirmed int64 `json:"inbox_unconfirmed,omitempty"` // received though the API did not confirm it (a failed request that stored it)

	// Storm topic recovery: messages published to the topic while the
	// clients were away, which each client must recover when it
	// resubscribes with its position; also counted in Expected, Delivered,
	// Missing and Duplicates.
	TopicExpected    int64 `json:"topic_expected,omitempty"`    // accepted by the API (200) × clients
	TopicDelivered   int64 `json:"topic_delivered,omitempty"`   // of those, received (copies at or below the client's position dropped)
	TopicMissing     int64 `json:"topic_missing,omitempty"`     // accepted and never received
	TopicDuplicates  int64 `json:"topic_duplicates,omitempty"`  // a message received again under a new seq
	TopicRepeats     int64 `json:"topic_repeats,omitempty"`     // topic copies at or below the client's position, dropped: allowed
	TopicUnconfirmed int64 `json:"topic_unconfirmed,omitempty"` // received though the API did not confirm it
	TopicRecovered   int64 `json:"topic_recovered,omitempty"`   // resubscriptions answered recovered
	TopicUnrecovered int64 `json:"topic_unrecovered,omitempty"` // resubscriptions answered without recovered: a failure

	Timeline []Point  `json:"timeline"`
	Notes    []string `json:"notes,omitempty"`
}
