package bench

import (
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram range and precision. Values are recorded in whole microseconds.
const (
	// HistMin is the smallest latency a Histogram distinguishes. Shorter
	// (and negative) durations are recorded as HistMin and counted as
	// clamped.
	HistMin = time.Microsecond
	// HistMax is the largest latency a Histogram records. Longer durations
	// are recorded as HistMax and counted as clamped.
	HistMax = 10 * time.Minute
	// HistSigFigs is the number of significant decimal digits a Histogram
	// made by NewHistogram keeps: every recorded value is exact to within
	// 0.1%.
	HistSigFigs = 3

	histMinUS = int64(HistMin / time.Microsecond)
	histMaxUS = int64(HistMax / time.Microsecond)
)

// Histogram is a latency histogram (an HDR histogram of microseconds, from
// HistMin to HistMax) whose recordings can be serialised with Snapshot,
// sent to another process and merged there without losing precision, so the
// coordinator's percentiles are those of one histogram that saw every
// worker's values.
//
// A Histogram made by NewHistogram holds about 170 KiB of counters, however
// many values it records; record into one per goroutine (or per worker) and
// merge, rather than making one per message.
//
// A Histogram is not safe for concurrent use; see SyncHistogram. The zero
// value is not usable: make one with NewHistogram.
type Histogram struct {
	h       *hdrhistogram.Histogram
	clamped int64
}

// NewHistogram returns an empty Histogram covering HistMin to HistMax with
// HistSigFigs significant figures.
func NewHistogram() *Histogram {
	return newHistogramSigFigs(HistSigFigs)
}

// newHistogramSigFigs returns an empty Histogram of the standard range with
// the given precision. The timeline uses 2 significant figures (about
// 24 KiB per histogram instead of 170 KiB) for its per-second histograms.
func newHistogramSigFigs(sigFigs int) *Histogram {
	return &Histogram{h: hdrhistogram.New(histMinUS, histMaxUS, sigFigs)}
}

// clampUS converts d to whole microseconds within the histogram's range and
// reports whether it had to be clamped.
func clampUS(d time.Duration) (v int64, clamped bool) {
	v = int64(d / time.Microsecond)
	switch {
	case v < histMinUS:
		return histMinUS, true
	case v > histMaxUS:
		return histMaxUS, true
	}
	return v, false
}

// Record records one latency. Durations outside HistMin..HistMax are
// recorded as the nearest bound and counted by Clamped.
func (h *Histogram) Record(d time.Duration) {
	h.RecordN(d, 1)
}

// RecordN records n occurrences of the latency d (nothing if n <= 0).
// Durations outside HistMin..HistMax are recorded as the nearest bound and
// counted by Clamped.
func (h *Histogram) RecordN(d time.Duration, n int64) {
	if n <= 0 {
		return
	}
	v, c := clampUS(d)
	if c {
		h.clamped += n
	}
	// v is within the range the histogram was built for, so this cannot
	// fail.
	_ = h.h.RecordValues(v, n)
}

// Merge adds every value recorded in o to h. o is not modified. Merging
// histograms of the same range and precision is exact.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o.h.TotalCount() == 0 && o.clamped == 0 {
		return
	}
	h.clamped += o.clamped
	if o.h.LowestTrackableValue() >= h.h.LowestTrackableValue() && o.h.HighestTrackableValue() <= h.h.HighestTrackableValue() {
		h.h.Merge(o.h)
		return
	}
	// A histogram decoded from a foreign snapshot with a wider range:
	// clamp its values into ours.
	for _, b := range o.h.Distribution() {
		if b.Count == 0 {
			continue
		}
		v := min(max(b.From, histMinUS), histMaxUS)
		if v != b.From {
			h.clamped += b.Count
		}
		_ = h.h.RecordValues(v, b.Count)
	}
}

// Count returns the number of values recorded, clamped ones included.
func (h *Histogram) Count() int64 {
	return h.h.TotalCount()
}

// Clamped returns how many of the recorded values lay outside
// HistMin..HistMax and were recorded as the nearest bound.
func (h *Histogram) Clamped() int64 {
	return h.clamped
}

// Quantiles summarises the recorded values. Every field is filled; all are
// zero if nothing was recorded. Percentiles are the highest value
// equivalent to the true percentile at the histogram's precision, so they
// never understate a latency.
func (h *Histogram) Quantiles() Quantiles {
	n := h.h.TotalCount()
	if n == 0 {
		return Quantiles{}
	}
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	return Quantiles{
		Count: n,
		Min:   us(h.h.Min()),
		Mean:  time.Duration(h.h.Mean() * float64(time.Microsecond)),
		P50:   us(h.h.ValueAtQuantile(50)),
		P90:   us(h.h.ValueAtQuantile(90)),
		P99:   us(h.h.ValueAtQuantile(99)),
		P999:  us(h.h.ValueAtQuantile(99.9)),
		Max:   us(h.h.Max()),
	}
}

// Reset forgets every recorded value.
func (h *Histogram) Reset() {
	h.h.Reset()
	h.clamped = 0
}

// HistSnapshot is the serialisable form of a Histogram: the HdrHistogram V2
// compressed encoding (base64, the form HdrHistogram's log tools read) plus
// the clamped count. It encodes to JSON and turns back into an identical
// Histogram with HistogramFrom. The zero HistSnapshot is an empty
// histogram.
type HistSnapshot struct {
	HDR     string `json:"hdr,omitempty"`     // V2 compressed encoding, base64
	Clamped int64  `json:"clamped,omitempty"` // see Histogram.Clamped
}

// Snapshot returns h's recordings in serialisable form. An empty histogram
// gives the zero HistSnapshot.
func (h *Histogram) Snapshot() HistSnapshot {
	if h.h.TotalCount() == 0 {
		return HistSnapshot{Clamped: h.clamped}
	}
	b, err := h.h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		// Encoding writes into memory buffers and cannot fail for a
		// histogram built by this package.
		panic(fmt.Sprintf("bench: encoding histogram: %v", err))
	}
	return HistSnapshot{HDR: string(b), Clamped: h.clamped}
}

// errBadSnapshot is wrapped by every error HistogramFrom returns.
var errBadSnapshot = errors.New("bench: bad histogram snapshot")

// HistogramFrom rebuilds the Histogram that s was taken of. It returns an
// error, never panics, if s is corrupt.
func HistogramFrom(s HistSnapshot) (h *Histogram, err error) {
	if s.Clamped < 0 {
		return nil, fmt.Errorf("%w: negative clamped count %d", errBadSnapshot, s.Clamped)
	}
	if s.HDR == "" {
		h = NewHistogram()
		h.clamped = s.Clamped
		return h, nil
	}
	raw, err := base64.StdEncoding.DecodeString(s.HDR)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadSnapshot, err)
	}
	if len(raw) < 8 {
		return nil, fmt.Errorf("%w: %d bytes is too short", errBadSnapshot, len(raw))
	}
	// The decoder indexes into the data it is given without checking its
	// length, so corrupt input can make it panic.
	defer func() {
		if r := recover(); r != nil {
			h, err = nil, fmt.Errorf("%w: %v", errBadSnapshot, r)
		}
	}()
	d, err := hdrhistogram.Decode([]byte(s.HDR))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errBadSnapshot, err)
	}
	if d.LowestTrackableValue() < 1 || d.HighestTrackableValue() < 2*d.LowestTrackableValue() {
		return nil, fmt.Errorf("%w: range %d..%d", errBadSnapshot, d.LowestTrackableValue(), d.HighestTrackableValue())
	}
	return &Histogram{h: d, clamped: s.Clamped}, nil
}

// SyncHistogram is a Histogram guarded by a mutex, for the few places where
// several goroutines record into one histogram. Where it is practical,
// prefer a Histogram per goroutine merged at the end. The zero value is
// not usable; make one with NewSyncHistogram.
type SyncHistogram struct {
	mu sync.Mutex
	h  *Histogram
}

// NewSyncHistogram returns an empty SyncHistogram with the range and
// precision of NewHistogram.
func NewSyncHistogram() *SyncHistogram {
	return &SyncHistogram{h: NewHistogram()}
}

// Record records one latency, like Histogram.Record.
func (s *SyncHistogram) Record(d time.Duration) {
	s.mu.Lock()
	s.h.Record(d)
	s.mu.Unlock()
}

// RecordN records n occurrences of d, like Histogram.RecordN.
func (s *SyncHistogram) RecordN(d time.Duration, n int64) {
	s.mu.Lock()
	s.h.RecordN(d, n)
	s.mu.Unlock()
}

// Merge adds every value recorded in o, like Histogram.Merge. o must not be
// in use by another goroutine.
func (s *SyncHistogram) Merge(o *Histogram) {
	s.mu.Lock()
	s.h.Merge(o)
	s.mu.Unlock()
}

// Count returns the number of values recorded.
func (s *SyncHistogram) Count() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.Count()
}

// Quantiles summarises the values recorded so far.
func (s *SyncHistogram) Quantiles() Quantiles {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.Quantiles()
}

// Snapshot returns the values recorded so far in serialisable form.
func (s *SyncHistogram) Snapshot() HistSnapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h.Snapshot()
}

// Histogram returns a copy of the values recorded so far, which the caller
// owns.
func (s *SyncHistogram) Histogram() *Histogram {
	c := NewHistogram()
	s.mu.Lock()
	c.Merge(s.h)
	s.mu.Unlock()
	return c
}

// Reset forgets every recorded value.
func (s *SyncHistogram) Reset() {
	s.mu.Lock()
	s.h.Reset()
	s.mu.Unlock()
}
