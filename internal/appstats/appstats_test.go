package appstats

import (
	"fmt"
	"testing"
	"time"

	"github.com/herald-push/herald/protocol"
)

func frame() *protocol.Encoded {
	return protocol.Encode(&protocol.Frame{Type: protocol.TypePush, Stream: "u:x"})
}

func appOf(t *testing.T, s Snapshot, app string) App {
	t.Helper()
	for _, a := range s.Apps {
		if a.App == app {
			return a
		}
	}
	t.Fatalf("snapshot has no app %q: %+v", app, s.Apps)
	return App{}
}

func reported(s Snapshot) []string {
	var out []string
	for _, a := range s.Apps {
		out = append(out, a.App)
	}
	return out
}

// TestDeliveredBuckets checks that a stamped frame lands in the bucket of
// its age, once per write, and that unstamped frames are not observed.
func TestDeliveredBuckets(t *testing.T) {
	r := New([]string{"a", "b"})
	e := frame()
	r.Accept(e, "a", Topic)
	// Age it: 60 ms, between the 50 and 75 ms bounds.
	at, tag := e.Stamp()
	e.SetStamp(at-int64(60*time.Millisecond), tag)
	plain := frame()
	r.Delivered([]*protocol.Encoded{e, plain}, 1)
	r.Delivered([]*protocol.Encoded{e}, 2)

	s := r.Snapshot()
	a := appOf(t, s, "a")
	if a.Accepted[Topic] != 1 || a.Accepted[Inbox] != 0 {
		t.Fatalf("accepted %v; want one topic message", a.Accepted)
	}
	h := a.Latency[Topic]
	if h.Count() != 2 {
		t.Fatalf("count %d; want 2 (one per write)", h.Count())
	}
	i := 0
	for s.Bounds[i] < .075 {
		i++
	}
	if s.Bounds[i-1] != .05 || h.Counts[i] != 2 {
		t.Fatalf("counts %v (bounds %v); want 2 in the (0.05, 0.075] bucket", h.Counts, s.Bounds)
	}
	if h.Sum < .12 || h.Sum > 5 {
		t.Fatalf("sum %v s; want about 0.12", h.Sum)
	}
	if b := appOf(t, s, "b"); b.Latency[Topic].Count() != 0 || b.Accepted[Topic] != 0 {
		t.Fatalf("app b counted: %+v", b)
	}
}

// TestBoundedLabels checks that apps past MaxApps share Other, that a
// reload adds labels while slots are left and that a removed app is no
// longer reported but keeps its counts.
func TestBoundedLabels(t *testing.T) {
	var apps []string
	for i := range MaxApps + 10 {
		apps = append(apps, fmt.Sprintf("app%03d", i))
	}
	r := New(apps[:MaxApps-1])
	if got := len(r.Snapshot().Apps); got != MaxApps { // the apps and Other
		t.Fatalf("%d labels; want %d", got, MaxApps)
	}
	r.SetApps(apps) // one more gets a label, the rest share Other
	s := r.Snapshot()
	if got := len(s.Apps); got != MaxApps+1 {
		t.Fatalf("%d labels after reload; want %d", got, MaxApps+1)
	}
	last := apps[len(apps)-1]
	e := frame()
	r.Accept(e, last, Inbox)
	r.Delivered([]*protocol.Encoded{e}, 0)
	r.API(last, 429)
	r.API("never-configured", 200)
	o := appOf(t, r.Snapshot(), Other)
	if o.Accepted[Inbox] != 1 || o.Latency[Inbox].Count() != 1 || o.API[3] != 1 || o.RateLimited != 1 {
		t.Fatalf("Other = %+v; want the app past the cap's message and 429, and no request of an unknown app", o)
	}

	e = frame()
	r.Accept(e, apps[0], Broadcast)
	r.SetApps(apps[1:])
	for _, name := range reported(r.Snapshot()) {
		if name == apps[0] {
			t.Fatalf("removed app %s still reported", apps[0])
		}
	}
	r.SetApps(apps)
	if a := appOf(t, r.Snapshot(), apps[0]); a.Accepted[Broadcast] != 1 {
		t.Fatalf("app back after removal: accepted %v; want its count kept", a.Accepted)
	}
}

// TestAPIClasses checks the status classes and 429s.
func TestAPIClasses(t *testing.T) {
	r := New([]string{"a"})
	for _, st := range []int{200, 200, 404, 429, 503, 500} {
		r.API("a", st)
	}
	a := appOf(t, r.Snapshot(), "a")
	if a.API != [5]uint64{0, 2, 0, 2, 2} || a.RateLimited != 1 {
		t.Fatalf("API %v, 429s %d", a.API, a.RateLimited)
	}
}

// BenchmarkDelivered is the cost added to each write of one stamped
// frame: a clock read, a bucket search and two atomic adds.
func BenchmarkDelivered(b *testing.B) {
	r := New([]string{"a"})
	e := frame()
	r.Accept(e, "a", Topic)
	frames := []*protocol.Encoded{e}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var conn uint64
		for pb.Next() {
			conn++
			r.Delivered(frames, conn)
		}
	})
}

// BenchmarkDeliveredUnstamped is the cost for a write without stamped
// frames (replies, catch-ups).
func BenchmarkDeliveredUnstamped(b *testing.B) {
	r := New([]string{"a"})
	frames := []*protocol.Encoded{frame()}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r.Delivered(frames, uint64(i))
	}
}
