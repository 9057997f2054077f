// Package appstats records per-app counters and the delivery-latency
// histogram on the hot paths, with a few atomic adds and no locks or
// allocations; package metrics exports them.
//
// Delivery latency is the time from "publish accepted" (the node stored
// the message and hands its PUSH frame to the hub: the API's answer is
// decided) to "written to the socket" (the gateway's write of the batch
// holding the frame returned). The node stamps the frame once
// (protocol.Encoded.SetStamp, with a reading of the Recorder's monotonic
// clock and a tag naming the app and kind); the gateway observes each
// stamped frame it writes, once per connection. Frames that other nodes
// of a cluster relay are stamped when they reach this node, and so are
// messages the hub reads from the store to fill a gap: their time on the
// way between nodes is not counted. Catch-ups and recoveries (stored
// messages replayed to a device that reconnects) are not stamped, so not
// observed: their age measures how long the device was away, not how
// fast the server delivers.
//
// App labels are bounded: the apps configured at start and added by
// reloads get a label each up to MaxApps; the others share Other. A
// removed app keeps its slot (its counters resume if it comes back) but
// is no longer reported.
package appstats

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/protocol"
)

// Kind is what a message was addressed to.
type Kind uint8

// Kinds.
const (
	Inbox     Kind = iota // one user (push)
	Topic                 // a topic's subscribers (publish)
	Broadcast             // every connection of an app (broadcast)
)

// Kinds is the number of kinds.
const Kinds = 3

// String names the kind as the metrics' kind label does.
func (k Kind) String() string {
	switch k {
	case Inbox:
		return "inbox"
	case Topic:
		return "topic"
	case Broadcast:
		return "broadcast"
	}
	return "unknown"
}

// MaxApps is how many apps get a label of their own.
const MaxApps = 64

// Other is the label shared by the apps past MaxApps.
const Other = "_other"

// slots is the number of app slots: Other (slot 0) and MaxApps apps.
const slots = MaxApps + 1

// bucketBounds are the latency buckets' upper bounds in seconds, from
// 100 µs to 30 s, finer where Herald's p99 targets lie (50-250 ms).
func bucketBounds() []float64 {
	return []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .075,
		.1, .15, .2, .25, .3, .4, .5, .75, 1, 2.5, 5, 10, 30}
}

// Recorder holds the counters. Its methods are safe for concurrent use.
type Recorder struct {
	base     time.Time // the monotonic clock's origin
	bounds   []float64 // seconds
	boundsNs []int64   // the same in nanoseconds
	nb       int       // len(bounds)+1: buckets per series, +Inf last

	mu    sync.Mutex // serialises SetApps
	index atomic.Pointer[appIndex]

	shards   []shard         // spread concurrent writers over cache lines
	accepted []atomic.Uint64 // [slot*Kinds+kind]
	api      []apiCounters   // [slot]
}

// appIndex maps app ids to slots. It is immutable once published.
type appIndex struct {
	slot   map[string]int // configured app → slot (0 past MaxApps)
	names  []string       // slot → label; names[0] is Other
	active []bool         // slot → reported (a configured app, or Other)
}

// shard is one copy of the latency counters.
type shard struct {
	counts []atomic.Uint64 // [(slot*Kinds+kind)*nb + bucket]
	sums   []atomic.Uint64 // [slot*Kinds+kind], nanoseconds
}

// apiCounters are one app's server API requests by status class.
type apiCounters struct {
	class   [5]atomic.Uint64 // 1xx .. 5xx
	limited atomic.Uint64    // 429
}

// New returns a recorder for the apps configured at start.
func New(apps []string) *Recorder {
	r := &Recorder{base: time.Now(), bounds: bucketBounds()}
	r.nb = len(r.bounds) + 1
	r.boundsNs = make([]int64, len(r.bounds))
	for i, b := range r.bounds {
		r.boundsNs[i] = int64(b * float64(time.Second))
	}
	n := 1
	for n < 2*runtime.GOMAXPROCS(0) && n < 32 {
		n *= 2
	}
	r.shards = make([]shard, n)
	for i := range r.shards {
		r.shards[i] = shard{counts: make([]atomic.Uint64, slots*Kinds*r.nb), sums: make([]atomic.Uint64, slots*Kinds)}
	}
	r.accepted = make([]atomic.Uint64, slots*Kinds)
	r.api = make([]apiCounters, slots)
	r.index.Store(&appIndex{slot: map[string]int{}, names: []string{Other}, active: []bool{true}})
	r.SetApps(apps)
	return r
}

// SetApps replaces the configured apps (a reload). A new app gets the
// next free label while fewer than MaxApps have one, and shares Other
// after; a removed app is no longer reported.
func (r *Recorder) SetApps(apps []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.index.Load()
	next := &appIndex{slot: make(map[string]int, len(old.slot)), names: append([]string(nil), old.names...)}
	next.active = make([]bool, len(old.names), slots)
	next.active[0] = true
	// Every app ever named keeps its slot; only the listed are active.
	for app, s := range old.slot {
		next.slot[app] = s
	}
	for _, app := range apps {
		s, ok := next.slot[app]
		if !ok {
			if len(next.names) < slots {
				s = len(next.names)
				next.names = append(next.names, app)
				next.active = append(next.active, false)
			}
			next.slot[app] = s // 0 past MaxApps: Other
		}
		next.active[s] = true
	}
	r.index.Store(next)
}

// slotOf returns app's slot and whether app is configured (now or once).
func (r *Recorder) slotOf(app string) (int, bool) {
	s, ok := r.index.Load().slot[app]
	return s, ok
}

// Now reads the recorder's monotonic clock, in nanoseconds; never 0.
func (r *Recorder) Now() int64 { return int64(time.Since(r.base)) + 1 }

// tag is the series of app's messages of kind k.
func (r *Recorder) tag(app string, k Kind) uint32 {
	s, _ := r.slotOf(app) // an unknown app (removed meanwhile) counts as Other
	return uint32(s*Kinds + int(k))
}

// Accept counts a message of app accepted (stored and handed to the hub)
// and stamps its frame, which must not be shared yet, with the time.
func (r *Recorder) Accept(e *protocol.Encoded, app string, k Kind) {
	t := r.tag(app, k)
	r.accepted[t].Add(1)
	if e != nil { // nil: accepted but held (its app is paused), sent later
		e.SetStamp(r.Now(), t)
	}
}

// Stamp stamps a frame that reached this node without being accepted
// here (relayed by another node, or read from the store to fill a gap).
func (r *Recorder) Stamp(e *protocol.Encoded, app string, k Kind) {
	e.SetStamp(r.Now(), r.tag(app, k))
}

// Delivered observes the stamped frames among frames, just written to
// connection conn: one bucket and one sum add per frame. Frames not
// stamped (replies, catch-ups, recoveries) are skipped.
func (r *Recorder) Delivered(frames []*protocol.Encoded, conn uint64) {
	var now int64
	sh := &r.shards[conn&uint64(len(r.shards)-1)]
	for _, e := range frames {
		at, t := e.Stamp()
		if at == 0 {
			continue
		}
		if now == 0 {
			now = r.Now()
		}
		d := max(now-at, 0)
		// Binary search for the first bound >= d (bucket le=bound).
		lo, hi := 0, len(r.boundsNs)
		for lo < hi {
			m := int(uint(lo+hi) >> 1)
			if r.boundsNs[m] < d {
				lo = m + 1
			} else {
				hi = m
			}
		}
		sh.counts[int(t)*r.nb+lo].Add(1)
		sh.sums[t].Add(uint64(d))
	}
}

// API counts one server API request of app answered with status. Requests
// naming an app that is not configured are not counted.
func (r *Recorder) API(app string, status int) {
	s, ok := r.slotOf(app)
	if !ok {
		return
	}
	c := &r.api[s]
	if cl := status/100 - 1; cl >= 0 && cl < len(c.class) {
		c.class[cl].Add(1)
	}
	if status == 429 {
		c.limited.Add(1)
	}
}

// Histogram is one series' latency counts.
type Histogram struct {
	Counts []uint64 // per bucket (not cumulative), len(Bounds)+1, +Inf last
	Sum    float64  // seconds
}

// Count returns the observations.
func (h Histogram) Count() uint64 {
	var n uint64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// App is one app label's counters.
type App struct {
	App         string
	Latency     [Kinds]Histogram
	Accepted    [Kinds]uint64
	API         [5]uint64 // requests by status class, 1xx .. 5xx
	RateLimited uint64    // requests answered 429
}

// Snapshot is the counters of every reported app label (the configured
// apps with a label, and Other), in slot order.
type Snapshot struct {
	Bounds []float64 // seconds, ascending
	Apps   []App
}

// Snapshot reads the counters.
func (r *Recorder) Snapshot() Snapshot {
	idx := r.index.Load()
	out := Snapshot{Bounds: append([]float64(nil), r.bounds...)}
	for s, name := range idx.names {
		if !idx.active[s] {
			continue
		}
		a := App{App: name}
		for k := range Kinds {
			t := s*Kinds + k
			h := Histogram{Counts: make([]uint64, r.nb)}
			var sum uint64
			for i := range r.shards {
				sh := &r.shards[i]
				for b := range h.Counts {
					h.Counts[b] += sh.counts[t*r.nb+b].Load()
				}
				sum += sh.sums[t].Load()
			}
			h.Sum = float64(sum) / float64(time.Second)
			a.Latency[k] = h
			a.Accepted[k] = r.accepted[t].Load()
		}
		for c := range a.API {
			a.API[c] = r.api[s].class[c].Load()
		}
		a.RateLimited = r.api[s].limited.Load()
		out.Apps = append(out.Apps, a)
	}
	return out
}
