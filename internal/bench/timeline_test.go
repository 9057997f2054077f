package bench

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// sec returns the time s seconds (fractions allowed) after t0.
func sec(s float64) time.Time {
	return t0.Add(time.Duration(s * float64(time.Second)))
}

// tlEvent is one call on a Timeline.
type tlEvent struct {
	kind string // "d" delivered, "s" sent, "e" error, "c" connections
	at   float64
	n    int64 // sent count, connections, or latency in ms
}

func (e tlEvent) apply(tl *Timeline) {
	switch e.kind {
	case "d":
		tl.Delivered(sec(e.at), time.Duration(e.n)*time.Millisecond)
	case "s":
		tl.Sent(sec(e.at), e.n)
	case "e":
		tl.Error(sec(e.at))
	case "c":
		tl.Connections(sec(e.at), e.n)
	}
}

// snapshotJSON sends a Timeline's snapshot through JSON, as a worker does.
func snapshotJSON(t *testing.T, tl *Timeline) TimelineSnapshot {
	t.Helper()
	b, err := json.Marshal(tl.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	var s TimelineSnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}

// counts flattens points to [deliveries sent errors connections latency-count]
// per second for comparison.
func counts(ps []Point) [][5]int64 {
	out := make([][5]int64, len(ps))
	for i, p := range ps {
		if p.Second != i {
			panic("points out of order")
		}
		out[i] = [5]int64{p.Deliveries, p.Sent, p.Errors, p.Connections, p.Latency.Count}
	}
	return out
}

func TestTimelineMergeAlignment(t *testing.T) {
	type worker struct {
		start  float64 // seconds after t0 (workers normally share t0)
		limit  int     // 0: default
		events []tlEvent
	}
	tests := []struct {
		name    string
		limit   int // dst's, 0: default
		workers []worker
		want    [][5]int64
	}{
		{
			name: "shared start",
			workers: []worker{
				{events: []tlEvent{{"s", 0.1, 10}, {"d", 0.5, 1}, {"d", 0.9, 2}, {"c", 0.2, 100}, {"d", 2.2, 3}, {"e", 2.3, 0}}},
				{events: []tlEvent{{"s", 0.9, 5}, {"d", 1.0, 4}, {"c", 1.5, 50}, {"d", 2.9, 5}, {"e", 2.999, 0}}},
			},
			want: [][5]int64{
				{2, 15, 0, 100, 2},
				{1, 0, 0, 150, 1},
				{2, 0, 2, 150, 2},
			},
		},
		{
			name: "later start aligns by absolute second",
			workers: []worker{
				{events: []tlEvent{{"d", 3.5, 1}, {"s", 1.2, 1}}},
				{start: 2, events: []tlEvent{{"d", 2.1, 1}, {"d", 3.7, 2}, {"s", 4.0, 7}}}, // its seconds 0,1,2 are t0+2,3,4
			},
			want: [][5]int64{
				{0, 0, 0, 0, 0},
				{0, 1, 0, 0, 0},
				{1, 0, 0, 0, 1},
				{2, 0, 0, 0, 2},
				{0, 7, 0, 0, 0},
			},
		},
		{
			name: "fractional start shift floors to the second it falls in",
			workers: []worker{
				{start: 1.5, events: []tlEvent{{"d", 1.6, 1}, {"d", 2.6, 1}}}, // its second 0 is t0+1.5: dst second 1
			},
			want: [][5]int64{
				{0, 0, 0, 0, 0},
				{1, 0, 0, 0, 1},
				{1, 0, 0, 0, 1},
			},
		},
		{
			name:  "snapshot longer than dst bound goes into the last second",
			limit: 3,
			workers: []worker{
				{events: []tlEvent{{"d", 0, 1}, {"c", 0, 10}, {"d", 2, 1}, {"c", 2, 20}, {"d", 5, 1}, {"c", 5, 30}, {"d", 9.9, 1}, {"c", 9, 40}, {"s", 9, 3}}},
			},
			want: [][5]int64{
				{1, 0, 0, 10, 1},
				{0, 0, 0, 10, 0},
				{3, 3, 0, 40, 3}, // the gauge of the latest second, not a sum
			},
		},
		{
			name: "a shorter worker's connections carry on",
			workers: []worker{
				{events: []tlEvent{{"c", 0.5, 100}, {"c", 1.5, 200}, {"d", 3.5, 1}, {"c", 3.5, 300}}},
				{events: []tlEvent{{"c", 0.5, 10}, {"c", 1.5, 20}}},
			},
			want: [][5]int64{
				{0, 0, 0, 110, 0},
				{0, 0, 0, 220, 0},
				{0, 0, 0, 220, 0},
				{1, 0, 0, 320, 1},
			},
		},
		{
			name: "empty worker",
			workers: []worker{
				{events: []tlEvent{{"d", 0.5, 1}}},
				{},
			},
			want: [][5]int64{{1, 0, 0, 0, 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var snaps []TimelineSnapshot
			for _, w := range tt.workers {
				tl := NewTimelineLimit(sec(w.start), cmpOr(w.limit, DefaultTimelineSeconds))
				for _, e := range w.events {
					e.apply(tl)
				}
				snaps = append(snaps, snapshotJSON(t, tl))
			}
			// The merge must not depend on the order of the snapshots.
			for _, order := range [][]int{ascending(len(snaps)), descending(len(snaps))} {
				dst := NewTimelineLimit(t0, cmpOr(tt.limit, DefaultTimelineSeconds))
				for _, i := range order {
					if err := MergeTimeline(dst, snaps[i]); err != nil {
						t.Fatal(err)
					}
				}
				if got := counts(dst.Points()); !slices.Equal(got, tt.want) {
					t.Errorf("order %v: got\n%v\nwant\n%v", order, got, tt.want)
				}
				// A merged timeline merges again unchanged (a tree of
				// coordinators).
				again := NewTimelineLimit(t0, cmpOr(tt.limit, DefaultTimelineSeconds))
				if err := MergeTimeline(again, snapshotJSON(t, dst)); err != nil {
					t.Fatal(err)
				}
				if got := counts(again.Points()); !slices.Equal(got, tt.want) {
					t.Errorf("order %v, merged twice: got\n%v\nwant\n%v", order, got, tt.want)
				}
			}
		})
	}
}

func cmpOr(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func ascending(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func descending(n int) []int {
	s := ascending(n)
	slices.Reverse(s)
	return s
}

func TestTimelineBounds(t *testing.T) {
	tests := []struct {
		name    string
		limit   int
		events  []tlEvent
		wantLen int
		want    [][5]int64
	}{
		{"empty", 10, nil, 0, [][5]int64{}},
		{"before the start counts in second 0", 10, []tlEvent{{"d", -5, 1}, {"e", -0.1, 0}}, 1, [][5]int64{{1, 0, 1, 0, 1}}},
		{"after the bound counts in the last second", 3, []tlEvent{{"d", 0.5, 1}, {"d", 2.5, 1}, {"d", 3, 1}, {"d", 1e6, 1}, {"s", 99, 2}}, 3,
			[][5]int64{{1, 0, 0, 0, 1}, {0, 0, 0, 0, 0}, {3, 2, 0, 0, 3}}},
		{"far future does not overflow", 2, []tlEvent{{"s", 9e9, 1}}, 2, [][5]int64{{0, 0, 0, 0, 0}, {0, 1, 0, 0, 0}}},
		{"limit below 1 means 1", 0, []tlEvent{{"s", 0, 1}, {"s", 5, 1}}, 1, [][5]int64{{0, 2, 0, 0, 0}}},
		{"gauge: latest time wins within a second, then carries", 10, []tlEvent{{"c", 0.9, 5}, {"c", 0.1, 7}, {"c", 2.5, 9}, {"s", 3, 1}}, 4,
			[][5]int64{{0, 0, 0, 5, 0}, {0, 0, 0, 5, 0}, {0, 0, 0, 9, 0}, {0, 1, 0, 9, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := NewTimelineLimit(t0, tt.limit)
			for _, e := range tt.events {
				e.apply(tl)
			}
			if tl.Len() != tt.wantLen || tl.Len() > tl.Limit() {
				t.Errorf("Len %d (limit %d), want %d", tl.Len(), tl.Limit(), tt.wantLen)
			}
			if got := counts(tl.Points()); !slices.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if NewTimeline(t0).Limit() != DefaultTimelineSeconds || !NewTimeline(t0).Start().Equal(t0) {
		t.Error("NewTimeline: wrong default limit or start")
	}
}

func TestTimelinePointLatency(t *testing.T) {
	tl := NewTimeline(t0)
	for i := 1; i <= 100; i++ {
		tl.Delivered(sec(0.5), time.Duration(i)*time.Millisecond)
		tl.Delivered(sec(2.5), 7*time.Second)
	}
	ps := tl.Points()
	if len(ps) != 3 {
		t.Fatalf("%d points, want 3", len(ps))
	}
	tests := []struct {
		name      string
		got, want time.Duration
	}{
		{"second 0 p50", ps[0].Latency.P50, 50 * time.Millisecond},
		{"second 0 p99", ps[0].Latency.P99, 99 * time.Millisecond},
		{"second 0 max", ps[0].Latency.Max, 100 * time.Millisecond},
		{"second 0 min", ps[0].Latency.Min, 1 * time.Millisecond},
		{"second 1 p50", ps[1].Latency.P50, 0},
		{"second 2 p50", ps[2].Latency.P50, 7 * time.Second},
	}
	for _, tt := range tests {
		// The per-second histograms keep 2 significant figures.
		if !within(tt.got, tt.want, 0.01) {
			t.Errorf("%s = %v, want %v within 1%%", tt.name, tt.got, tt.want)
		}
	}
	if ps[1].Latency != (Quantiles{}) {
		t.Errorf("second without deliveries has latency %+v", ps[1].Latency)
	}
}

func TestMergeTimelineErrors(t *testing.T) {
	good := NewTimeline(t0)
	good.Delivered(sec(0.5), time.Millisecond)
	bad := good.Snapshot()
	bad.Seconds = append(bad.Seconds, SecondSnapshot{Deliveries: 1, Latency: &HistSnapshot{HDR: "garbage"}})
	noStart := good.Snapshot()
	noStart.Start = time.Time{}
	tests := []struct {
		name    string
		s       TimelineSnapshot
		wantErr string
	}{
		{"corrupt histogram", bad, "second 1"},
		{"no start", noStart, "no start time"},
		{"empty is fine", TimelineSnapshot{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := NewTimeline(t0)
			dst.Sent(sec(0), 1)
			err := MergeTimeline(dst, tt.s)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err %v, want one mentioning %q", err, tt.wantErr)
			}
			if got := counts(dst.Points()); !slices.Equal(got, [][5]int64{{0, 1, 0, 0, 0}}) {
				t.Errorf("dst changed by a failed merge: %v", got)
			}
		})
	}
}
