package gateway

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

func newProtected(t *testing.T, p Protection, now *time.Time) *Gateway {
	t.Helper()
	g, err := New(Config{TCPAddr: "127.0.0.1:0", Protection: p, Logger: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return *now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestIPTrackerBounded checks that the per-address state stays within
// MaxTrackedIPs under connects from many addresses, that a ban survives
// eviction, and that stale entries are swept.
func TestIPTrackerBounded(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := newProtected(t, Protection{ConnRate: Rate{PerSecond: 10, Burst: 10}, FlapConnects: 2, FlapWindow: time.Second,
		FlapBan: time.Minute, MaxTrackedIPs: 8}, &now)
	banned := netip.MustParseAddr("10.0.0.1")
	for i := 0; i < 3; i++ {
		g.admit(banned, now.UnixMilli())
	}
	if r := g.admit(banned, now.UnixMilli()); r == nil || r.reason != rIPBanned {
		t.Fatalf("flapping address: %+v, want banned", r)
	}
	for i := 0; i < 1000; i++ { // many addresses, one connect each
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		if r := g.admit(ip, now.UnixMilli()); r != nil {
			t.Fatalf("first connect of %v refused: %+v", ip, r)
		}
		if n := g.admission.trackedIPs(); n > 8 {
			t.Fatalf("%d addresses tracked, bound 8", n)
		}
	}
	if r := g.admit(banned, now.UnixMilli()); r == nil || r.reason != rIPBanned {
		t.Fatalf("banned address after a flood of others: %+v, want still banned", r)
	}
	now = now.Add(2 * time.Minute)
	var swept time.Time
	g.admission.tick(now, &swept)
	if n := g.admission.trackedIPs(); n != 0 {
		t.Fatalf("%d addresses tracked after everything went stale", n)
	}
	if r := g.admit(banned, now.UnixMilli()); r != nil {
		t.Fatalf("address after its ban: %+v", r)
	}
}

// TestAdmitLists checks deny over allow, and IPv4-mapped addresses.
func TestAdmitLists(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := newProtected(t, Protection{Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
		Deny: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}, &now)
	for _, tc := range []struct {
		ip     string
		reason int // -1: admitted
	}{{"10.1.2.3", -1}, {"10.9.1.1", rDenied}, {"192.168.1.1", rNotAllowed}, {"::1", rNotAllowed}} {
		r := g.admit(netip.MustParseAddr(tc.ip).Unmap(), now.UnixMilli())
		if (r == nil) != (tc.reason < 0) || (r != nil && r.reason != tc.reason) {
			t.Errorf("%s: %+v, want reason %d", tc.ip, r, tc.reason)
		}
	}
	if s := g.Stats(); s.Refused[RefusedDenied] != 1 || s.Refused[RefusedNotAllowed] != 2 {
		t.Fatalf("refused %v", s.Refused)
	}
}

// BenchmarkAdmit is what accepting a connection pays for protection with
// every check configured and none hit (lists of a few entries, the
// per-address tracker, the connection and memory bounds).
func BenchmarkAdmit(b *testing.B) {
	now := time.Unix(1_000_000, 0)
	g, err := New(Config{TCPAddr: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now },
		Protection: Protection{ConnRate: Rate{PerSecond: 1e6, Burst: 1e6}, FlapConnects: 1e9, FlapWindow: time.Second, FlapBan: time.Second,
			Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("127.0.0.0/8")},
			Deny:  []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, MaxConnections: 1e9, MaxMemory: 1 << 50}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ips := make([]netip.Addr, 1024)
	for i := range ips {
		ips[i] = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if r := g.admit(ips[i%len(ips)], now.UnixMilli()); r != nil {
			b.Fatalf("refused: %+v", r)
		}
	}
}
