package bench

import (
	"encoding/json"
	"errors"
	"math"
	"sync"
	"testing"
	"time"
)

// viaJSON sends a histogram through the path a worker's takes to the
// coordinator: Snapshot, JSON, HistogramFrom.
func viaJSON(t *testing.T, h *Histogram) *Histogram {
	t.Helper()
	b, err := json.Marshal(h.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var s HistSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	out, err := HistogramFrom(s)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// within reports whether got is within rel (a fraction) of want.
func within(got, want time.Duration, rel float64) bool {
	return math.Abs(float64(got-want)) <= rel*float64(want)
}

func TestHistogramMergeAcrossWorkers(t *testing.T) {
	ms := time.Millisecond
	type worker struct {
		from, to int // records from..to ms, each value once
		n        int64
	}
	tests := []struct {
		name    string
		workers []worker
		want    Quantiles // compared within HDR precision (0.1%)
	}{
		{
			name:    "two halves",
			workers: []worker{{1, 1000, 1}, {1001, 2000, 1}},
			want:    Quantiles{Count: 2000, Min: 1 * ms, Mean: 1000500 * time.Microsecond, P50: 1000 * ms, P90: 1800 * ms, P99: 1980 * ms, P999: 1998 * ms, Max: 2000 * ms},
		},
		{
			name:    "interleaved, weighted",
			workers: []worker{{1, 2000, 2}, {1, 2000, 3}, {1, 2000, 5}},
			want:    Quantiles{Count: 20000, Min: 1 * ms, Mean: 1000500 * time.Microsecond, P50: 1000 * ms, P90: 1800 * ms, P99: 1980 * ms, P999: 1998 * ms, Max: 2000 * ms},
		},
		{
			name:    "one worker idle",
			workers: []worker{{5, 5, 1000}, {0, -1, 0}},
			want:    Quantiles{Count: 1000, Min: 5 * ms, Mean: 5 * ms, P50: 5 * ms, P90: 5 * ms, P99: 5 * ms, P999: 5 * ms, Max: 5 * ms},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			all := NewHistogram()
			merged := NewHistogram()
			for _, w := range tt.workers {
				h := NewHistogram()
				for v := w.from; v <= w.to; v++ {
					h.RecordN(time.Duration(v)*ms, w.n)
					all.RecordN(time.Duration(v)*ms, w.n)
				}
				merged.Merge(viaJSON(t, h))
			}
			got, direct := merged.Quantiles(), all.Quantiles()
			if got != direct {
				t.Errorf("merged quantiles %+v, want those of one histogram %+v", got, direct)
			}
			if got.Count != tt.want.Count {
				t.Errorf("count %d, want %d", got.Count, tt.want.Count)
			}
			for _, f := range []struct {
				name      string
				got, want time.Duration
			}{
				{"min", got.Min, tt.want.Min}, {"mean", got.Mean, tt.want.Mean}, {"p50", got.P50, tt.want.P50},
				{"p90", got.P90, tt.want.P90}, {"p99", got.P99, tt.want.P99}, {"p99.9", got.P999, tt.want.P999},
				{"max", got.Max, tt.want.Max},
			} {
				if !within(f.got, f.want, 0.001) {
					t.Errorf("%s = %v, want %v within 0.1%%", f.name, f.got, f.want)
				}
			}
		})
	}
}

func TestHistogramSnapshotRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		record []time.Duration
	}{
		{"empty", nil},
		{"one", []time.Duration{1500 * time.Microsecond}},
		{"bounds", []time.Duration{0, HistMin, HistMax, time.Hour, -time.Second}},
		{"spread", func() []time.Duration {
			var ds []time.Duration
			for d := time.Microsecond; d < HistMax; d = d*11/10 + time.Microsecond {
				ds = append(ds, d)
			}
			return ds
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			for i, d := range tt.record {
				h.RecordN(d, int64(i+1))
			}
			got := viaJSON(t, h)
			if !got.h.Equals(h.h) || got.Clamped() != h.Clamped() {
				t.Errorf("round trip changed the histogram: count %d→%d, clamped %d→%d",
					h.Count(), got.Count(), h.Clamped(), got.Clamped())
			}
			if got.Quantiles() != h.Quantiles() {
				t.Errorf("quantiles %+v, want %+v", got.Quantiles(), h.Quantiles())
			}
		})
	}
}

func TestHistogramClamp(t *testing.T) {
	tests := []struct {
		name        string
		d           time.Duration
		n           int64
		wantClamped int64
		wantMax     time.Duration // within 0.1%
	}{
		{"in range", 3 * time.Millisecond, 1, 0, 3 * time.Millisecond},
		{"lowest", time.Microsecond, 1, 0, time.Microsecond},
		{"sub-microsecond", 999 * time.Nanosecond, 2, 2, time.Microsecond},
		{"zero", 0, 1, 1, time.Microsecond},
		{"negative (clock skew)", -5 * time.Millisecond, 3, 3, time.Microsecond},
		{"highest", HistMax, 1, 0, HistMax},
		{"too long", time.Hour, 4, 4, HistMax},
		{"n = 0 records nothing", time.Hour, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			h.RecordN(tt.d, tt.n)
			if h.Count() != tt.n || h.Clamped() != tt.wantClamped {
				t.Errorf("count %d clamped %d, want %d and %d", h.Count(), h.Clamped(), tt.n, tt.wantClamped)
			}
			if q := h.Quantiles(); !within(q.Max, tt.wantMax, 0.001) {
				t.Errorf("max %v, want %v", q.Max, tt.wantMax)
			}
			// The clamped count survives merging and serialising.
			m := NewHistogram()
			m.Merge(viaJSON(t, h))
			if m.Clamped() != tt.wantClamped || m.Count() != tt.n {
				t.Errorf("after merge: count %d clamped %d", m.Count(), m.Clamped())
			}
			h.Reset()
			if h.Count() != 0 || h.Clamped() != 0 || h.Quantiles() != (Quantiles{}) {
				t.Errorf("after Reset: count %d clamped %d quantiles %+v", h.Count(), h.Clamped(), h.Quantiles())
			}
		})
	}
}

func TestHistogramEmptyMerge(t *testing.T) {
	tests := []struct {
		name string
		dst  []time.Duration
		src  []*Histogram
	}{
		{"empty into empty", nil, []*Histogram{NewHistogram()}},
		{"nil into empty", nil, []*Histogram{nil}},
		{"zero snapshot into empty", nil, []*Histogram{mustFrom(t, HistSnapshot{})}},
		{"empty into full", []time.Duration{time.Millisecond, 2 * time.Millisecond}, []*Histogram{NewHistogram(), nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHistogram()
			for _, d := range tt.dst {
				h.Record(d)
			}
			before := h.Quantiles()
			for _, s := range tt.src {
				h.Merge(s)
			}
			if got := h.Quantiles(); got != before {
				t.Errorf("quantiles changed from %+v to %+v", before, got)
			}
			if len(tt.dst) == 0 && h.Quantiles() != (Quantiles{}) {
				t.Errorf("empty histogram has quantiles %+v", h.Quantiles())
			}
		})
	}
}

func mustFrom(t *testing.T, s HistSnapshot) *Histogram {
	t.Helper()
	h, err := HistogramFrom(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHistogramFromCorrupt(t *testing.T) {
	good := NewHistogram()
	good.Record(time.Millisecond)
	enc := good.Snapshot().HDR
	tests := []struct {
		name string
		s    HistSnapshot
	}{
		{"not base64", HistSnapshot{HDR: "!!!not base64!!!"}},
		{"too short", HistSnapshot{HDR: "HISTFAA="}},
		{"truncated", HistSnapshot{HDR: enc[:len(enc)/2] + "=="}},
		{"wrong cookie", HistSnapshot{HDR: "AAAAAAAAAAAAAAAAAAAAAA=="}},
		{"negative clamped", HistSnapshot{HDR: enc, Clamped: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := HistogramFrom(tt.s)
			if err == nil || !errors.Is(err, errBadSnapshot) || h != nil {
				t.Errorf("HistogramFrom = %v, %v; want a bad-snapshot error", h, err)
			}
		})
	}
}

func TestSyncHistogramConcurrent(t *testing.T) {
	s := NewSyncHistogram()
	const goroutines, each = 8, 500
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if i%2 == 0 {
					s.Record(time.Duration(g*each+i+1) * time.Microsecond)
				} else {
					s.RecordN(time.Duration(g*each+i+1)*time.Microsecond, 1)
				}
				if i%100 == 0 {
					_ = s.Quantiles()
					_ = s.Snapshot()
				}
			}
		}()
	}
	wg.Wait()
	if got := s.Count(); got != goroutines*each {
		t.Fatalf("count %d, want %d", got, goroutines*each)
	}
	c := s.Histogram()
	other := NewHistogram()
	other.Record(time.Second)
	s.Merge(other)
	if c.Count() != goroutines*each || s.Count() != goroutines*each+1 {
		t.Errorf("copy count %d, merged count %d", c.Count(), s.Count())
	}
	if q := s.Quantiles(); !within(q.Max, time.Second, 0.001) {
		t.Errorf("max %v after merging 1s", q.Max)
	}
	s.Reset()
	if s.Count() != 0 {
		t.Errorf("count %d after Reset", s.Count())
	}
}
