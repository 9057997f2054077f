package bench

import (
	"slices"
	"strconv"
	"sync"
	"testing"
)

type trackerCounts struct {
	expected, received, missing, duplicates, unexpected int64
}

func countsOf(tr *Tracker) trackerCounts {
	var c trackerCounts
	c.expected, c.received, c.missing, c.duplicates, c.unexpected = tr.Counts()
	return c
}

func TestTrackerCounts(t *testing.T) {
	tests := []struct {
		name                string
		receivers, messages int
		expect              func(tr *Tracker)
		deliver             func(mark func(r, s int))
		want                trackerCounts
		wantFirsts          int64 // Mark calls that returned true
		wantSample          []string
	}{
		{
			name:      "fan-out: perfect, lossy (every 7th dropped), duplicating (every 10th twice)",
			receivers: 3, messages: 100,
			expect: (*Tracker).ExpectAll,
			deliver: func(mark func(r, s int)) {
				for s := range 100 {
					mark(0, s)
					if s%7 != 0 {
						mark(1, s)
					}
					mark(2, s)
					if s%10 == 0 {
						mark(2, s)
					}
				}
			},
			// Receiver 1 misses seqs 0, 7, ..., 98: 15 of them.
			want:       trackerCounts{expected: 300, received: 285, missing: 15, duplicates: 10},
			wantFirsts: 285,
			wantSample: []string{"receiver 1 seq 0", "receiver 1 seq 7", "receiver 1 seq 14"},
		},
		{
			name:      "unicast: each receiver expects only its own seqs",
			receivers: 4, messages: 40,
			expect: func(tr *Tracker) {
				for s := range 40 {
					tr.Expect(s%4, s)
				}
				tr.Expect(0, 0) // twice changes nothing
			},
			deliver: func(mark func(r, s int)) {
				for s := range 40 {
					switch {
					case s == 13: // lost
					case s == 22:
						mark((s+1)%4, s) // delivered to the wrong receiver
					default:
						mark(s%4, s)
					}
				}
				mark(0, 4)   // duplicate
				mark(3, 3)   // duplicate
				mark(3, 7)   // duplicate
				mark(3, 22)  // duplicate of the misdelivery
				mark(9, 1)   // no such receiver
				mark(0, 40)  // no such seq
				mark(-1, -1) // nonsense
			},
			want:       trackerCounts{expected: 40, received: 38, missing: 2, duplicates: 4, unexpected: 4},
			wantFirsts: 38,
			wantSample: []string{"receiver 1 seq 13", "receiver 2 seq 22"},
		},
		{
			name:      "messages not a multiple of 64",
			receivers: 2, messages: 70,
			expect: (*Tracker).ExpectAll,
			deliver: func(mark func(r, s int)) {
				for s := range 69 {
					mark(0, s)
					mark(1, s)
				}
			},
			want:       trackerCounts{expected: 140, received: 138, missing: 2},
			wantFirsts: 138,
			wantSample: []string{"receiver 0 seq 69", "receiver 1 seq 69"},
		},
		{
			name:      "nothing expected",
			receivers: 2, messages: 10,
			expect:     func(*Tracker) {},
			deliver:    func(mark func(r, s int)) { mark(0, 1); mark(0, 1); mark(1, 9) },
			want:       trackerCounts{duplicates: 1, unexpected: 2},
			wantSample: nil,
		},
		{
			name:      "empty",
			receivers: 0, messages: 0,
			expect:     (*Tracker).ExpectAll,
			deliver:    func(mark func(r, s int)) { mark(0, 0) },
			want:       trackerCounts{unexpected: 1},
			wantSample: nil,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := NewTracker(tt.receivers, tt.messages)
			tt.expect(tr)
			var firsts int64
			tt.deliver(func(r, s int) {
				if tr.Mark(r, s) {
					firsts++
				}
			})
			if got := countsOf(tr); got != tt.want {
				t.Errorf("Counts = %+v, want %+v", got, tt.want)
			}
			if firsts != tt.wantFirsts {
				t.Errorf("Mark returned true %d times, want %d", firsts, tt.wantFirsts)
			}
			if got := tr.MissingSample(3); !slices.Equal(got, tt.wantSample) {
				t.Errorf("MissingSample(3) = %q, want %q", got, tt.wantSample)
			}
			if got := tr.MissingSample(0); got != nil {
				t.Errorf("MissingSample(0) = %q", got)
			}
		})
	}
}

func TestTrackerMissingSampleAll(t *testing.T) {
	tr := NewTracker(2, 130)
	tr.ExpectAll()
	var want []string
	for r := range 2 {
		for s := range 130 {
			if s%50 == 0 {
				want = append(want, "receiver "+itoa(r)+" seq "+itoa(s))
				continue
			}
			tr.Mark(r, s)
		}
	}
	if got := tr.MissingSample(100); !slices.Equal(got, want) {
		t.Errorf("MissingSample = %q, want %q", got, want)
	}
	if _, _, missing, _, _ := tr.Counts(); missing != int64(len(want)) {
		t.Errorf("missing %d, want %d", missing, len(want))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestTrackerConcurrentMark(t *testing.T) {
	const receivers, messages, copies = 16, 1000, 3
	tr := NewTracker(receivers, messages)
	tr.ExpectAll()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firsts int64
	for c := range copies {
		for r := range receivers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var n int64
				for s := range messages {
					if (s+c)%5 == 0 { // each copy skips a different fifth
						continue
					}
					if tr.Mark(r, s) {
						n++
					}
					if s%250 == 0 {
						tr.Counts() // concurrent reads are allowed
					}
				}
				mu.Lock()
				firsts += n
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	got := countsOf(tr)
	// Every seq is marked by at least two of the three copies.
	want := trackerCounts{
		expected:   receivers * messages,
		received:   receivers * messages,
		duplicates: receivers*messages*copies*4/5 - receivers*messages,
	}
	if got != want || firsts != receivers*messages {
		t.Errorf("Counts = %+v (firsts %d), want %+v", got, firsts, want)
	}
}

func TestTrackerPanics(t *testing.T) {
	tests := []struct {
		name string
		f    func()
	}{
		{"negative receivers", func() { NewTracker(-1, 5) }},
		{"negative messages", func() { NewTracker(5, -1) }},
		{"too large", func() { NewTracker(maxInt, maxInt) }},
		{"expect out of range", func() { NewTracker(2, 2).Expect(2, 0) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			tt.f()
		})
	}
}
