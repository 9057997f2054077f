package bench

import (
	"errors"
	"fmt"
	"time"
)

// DefaultTimelineSeconds is how many seconds a Timeline made by NewTimeline
// keeps: one hour.
const DefaultTimelineSeconds = 3600

// timelineSigFigs is the precision of a Timeline's per-second latency
// histograms: 2 significant figures (1%) is plenty for a chart and keeps
// each second's histogram to about 24 KiB.
const timelineSigFigs = 2

// Timeline is a run's per-second series: for each second since the start,
// the messages delivered, the messages sent, the errors, the number of open
// connections (a gauge) and a histogram of the latencies of the messages
// delivered in that second. Workers keep one each, send its Snapshot to the
// coordinator, which merges them with MergeTimeline into one Timeline
// aligned by absolute second, so every worker must be given the
// coordinator's start time.
//
// A Timeline is bounded: it keeps at most a fixed number of seconds
// (DefaultTimelineSeconds unless made with NewTimelineLimit), and events
// after the last second are counted in the last second. Events before the
// start are counted in the first second. A second's latency histogram is
// allocated when the first message is delivered in it, so memory is about
// 24 KiB per second with deliveries: 85 MiB for a full hour.
//
// A Timeline is not safe for concurrent use. The zero value is not usable:
// make one with NewTimeline.
type Timeline struct {
	start   time.Time
	limit   int
	buckets []timelineBucket
	// tails carry merged connection gauges past the end of the snapshot
	// they came from: a worker whose snapshot ends a second early still
	// has its connections open.
	tails []connTail
}

// timelineBucket is one second of a Timeline.
type timelineBucket struct {
	deliveries int64
	sent       int64
	errors     int64

	// The local connections gauge: the value reported last (by event
	// time) within the second, carried forward over seconds without one.
	conns    int64
	connsAt  time.Duration // offset from the start of the reported value
	connsSet bool
	// The sum of the gauges of the snapshots merged into this second.
	merged int64

	latency *Histogram // nil until something is delivered in the second
}

// connTail is a merged snapshot's last gauge value, which counts from
// second from onwards.
type connTail struct {
	from int
	n    int64
}

// NewTimeline returns an empty Timeline starting at start that keeps up to
// DefaultTimelineSeconds seconds.
func NewTimeline(start time.Time) *Timeline {
	return NewTimelineLimit(start, DefaultTimelineSeconds)
}

// NewTimelineLimit returns an empty Timeline starting at start that keeps
// up to maxSeconds seconds (at least 1).
func NewTimelineLimit(start time.Time, maxSeconds int) *Timeline {
	return &Timeline{start: start, limit: max(maxSeconds, 1)}
}

// Start returns the time the Timeline's second 0 begins.
func (t *Timeline) Start() time.Time { return t.start }

// Limit returns the most seconds the Timeline keeps.
func (t *Timeline) Limit() int { return t.limit }

// Len returns the number of seconds the Timeline holds: one more than the
// last second in which something was recorded, or 0.
func (t *Timeline) Len() int { return len(t.buckets) }

// index returns the second an event at the given offset from the start
// falls in, within the Timeline's bounds.
func (t *Timeline) index(off time.Duration) int {
	if off < 0 {
		return 0
	}
	return int(min(int64(off/time.Second), int64(t.limit-1)))
}

// bucket returns the bucket for second i, growing the Timeline to hold it.
func (t *Timeline) bucket(i int) *timelineBucket {
	if i >= len(t.buckets) {
		t.buckets = append(t.buckets, make([]timelineBucket, i+1-len(t.buckets))...)
	}
	return &t.buckets[i]
}

// at returns the bucket for an event at time at.
func (t *Timeline) at(at time.Time) *timelineBucket {
	return t.bucket(t.index(at.Sub(t.start)))
}

// Delivered records one message delivered at time at, latency after it was
// published.
func (t *Timeline) Delivered(at time.Time, latency time.Duration) {
	b := t.at(at)
	b.deliveries++
	if b.latency == nil {
		b.latency = newHistogramSigFigs(timelineSigFigs)
	}
	b.latency.Record(latency)
}

// Sent records n messages (or requests) sent at time at.
func (t *Timeline) Sent(at time.Time, n int64) {
	t.at(at).sent += n
}

// Error records one failure at time at.
func (t *Timeline) Error(at time.Time) {
	t.at(at).errors++
}

// Connections records that n connections were open at time at. Within a
// second the value with the latest time counts, and it carries forward
// over the following seconds until another is recorded.
func (t *Timeline) Connections(at time.Time, n int64) {
	off := at.Sub(t.start)
	b := t.bucket(t.index(off))
	if !b.connsSet || off >= b.connsAt {
		b.conns, b.connsAt, b.connsSet = n, off, true
	}
}

// connections returns the connections gauge for every second: the local
// gauge carried forward, plus the merged snapshots' gauges and tails.
func (t *Timeline) connections() []int64 {
	out := make([]int64, len(t.buckets))
	tail := make([]int64, len(t.buckets)+1)
	for _, c := range t.tails {
		if c.from < len(tail) {
			tail[c.from] += c.n
		}
	}
	var local, carried int64
	for i := range t.buckets {
		b := &t.buckets[i]
		if b.connsSet {
			local = b.conns
		}
		carried += tail[i]
		out[i] = local + b.merged + carried
	}
	return out
}

// TimelineSnapshot is the serialisable form of a Timeline, which a worker
// sends to the coordinator for MergeTimeline.
type TimelineSnapshot struct {
	Start   time.Time        `json:"start"`
	Seconds []SecondSnapshot `json:"seconds"` // second i of the run is Seconds[i]
}

// SecondSnapshot is one second of a TimelineSnapshot.
type SecondSnapshot struct {
	Deliveries  int64         `json:"deliveries,omitempty"`
	Sent        int64         `json:"sent,omitempty"`
	Errors      int64         `json:"errors,omitempty"`
	Connections int64         `json:"connections,omitempty"` // open at the end of the second
	Latency     *HistSnapshot `json:"latency,omitempty"`     // nil if nothing was delivered
}

// Snapshot returns the Timeline in serialisable form.
func (t *Timeline) Snapshot() TimelineSnapshot {
	conns := t.connections()
	s := TimelineSnapshot{Start: t.start, Seconds: make([]SecondSnapshot, len(t.buckets))}
	for i := range t.buckets {
		b := &t.buckets[i]
		s.Seconds[i] = SecondSnapshot{
			Deliveries:  b.deliveries,
			Sent:        b.sent,
			Errors:      b.errors,
			Connections: conns[i],
		}
		if b.latency != nil {
			hs := b.latency.Snapshot()
			s.Seconds[i].Latency = &hs
		}
	}
	return s
}

// MergeTimeline adds a worker's snapshot to dst, second by absolute second:
// the snapshot's second i, which begins at s.Start plus i seconds, goes into
// the dst second that time falls in. Counts and latencies add up; the
// connections gauges add up too, each snapshot's last value counting on
// after its end, so the sum stays right when one worker's snapshot is a
// second shorter than another's. The result does not depend on the order
// in which snapshots are merged. dst should be used only for merging:
// Connections calls on it would be added to the merged gauges.
//
// MergeTimeline returns an error, and leaves dst unchanged, if the snapshot
// has no start time or a corrupt histogram.
func MergeTimeline(dst *Timeline, s TimelineSnapshot) error {
	if len(s.Seconds) == 0 {
		return nil
	}
	if s.Start.IsZero() {
		return errors.New("bench: timeline snapshot has no start time")
	}
	hists := make([]*Histogram, len(s.Seconds))
	for i, sec := range s.Seconds {
		if sec.Latency == nil {
			continue
		}
		h, err := HistogramFrom(*sec.Latency)
		if err != nil {
			return fmt.Errorf("bench: timeline snapshot second %d: %w", i, err)
		}
		hists[i] = h
	}

	shift := s.Start.Sub(dst.start)
	pending, pendingIdx := int64(0), -1 // gauge of the source's latest second in dst second pendingIdx
	for i, sec := range s.Seconds {
		idx := dst.index(shift + time.Duration(i)*time.Second)
		b := dst.bucket(idx)
		b.deliveries += sec.Deliveries
		b.sent += sec.Sent
		b.errors += sec.Errors
		if h := hists[i]; h != nil {
			if b.latency == nil {
				b.latency = newHistogramSigFigs(timelineSigFigs)
			}
			b.latency.Merge(h)
		}
		// Several source seconds can fall in one dst second (at the
		// bounds); the gauge is the value of the latest of them.
		if idx != pendingIdx && pendingIdx >= 0 {
			dst.buckets[pendingIdx].merged += pending
		}
		pending, pendingIdx = sec.Connections, idx
	}
	dst.buckets[pendingIdx].merged += pending
	if pending != 0 && pendingIdx+1 < dst.limit {
		dst.tails = append(dst.tails, connTail{from: pendingIdx + 1, n: pending})
	}
	return nil
}

// Points returns the Timeline as Result.Timeline wants it: one Point per
// second, with the quantiles of that second's latencies.
func (t *Timeline) Points() []Point {
	conns := t.connections()
	ps := make([]Point, len(t.buckets))
	for i := range t.buckets {
		b := &t.buckets[i]
		ps[i] = Point{
			Second:      i,
			Deliveries:  b.deliveries,
			Sent:        b.sent,
			Errors:      b.errors,
			Connections: conns[i],
		}
		if b.latency != nil {
			ps[i].Latency = b.latency.Quantiles()
		}
	}
	return ps
}
