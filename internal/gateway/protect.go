package gateway

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Protection bounds who may open connections, and how many, checked when a
// connection is accepted, before any per-connection state: a refused TCP
// connection is closed at once, a refused WebSocket or SSE request gets an
// HTTP error instead of the upgrade. The zero Protection refuses nothing.
type Protection struct {
	// Allow, if not empty, lists the only source networks that may
	// connect. Deny lists networks that may not; it wins over Allow.
	Allow, Deny []netip.Prefix
	// ConnRate bounds the connections one source address may open; the
	// zero Rate: no bound.
	ConnRate Rate
	// FlapConnects connections from one address within FlapWindow get that
	// address banned for FlapBan; 0: no flap detection.
	FlapConnects int
	FlapWindow   time.Duration
	FlapBan      time.Duration
	// MaxConnections bounds the connections open on the gateway, across
	// transports (authenticated or not); 0: no bound.
	MaxConnections int
	// MaxMemory refuses new connections while the Go runtime holds more
	// than this many bytes (sampled on the timing wheel); 0: no bound.
	MaxMemory uint64
	// MaxCPU refuses new connections while the process kept more than
	// this fraction of its cores (GOMAXPROCS) busy over the last second,
	// as CPUTime measures it; 0 or a nil CPUTime: no bound.
	MaxCPU float64
	// CPUTime returns the CPU time the process used so far (false when
	// it cannot tell).
	CPUTime func() (time.Duration, bool)
	// MaxTrackedIPs bounds the source addresses whose rate and flap state
	// is kept; default 65536. When full, stale entries are dropped, then
	// arbitrary unbanned ones.
	MaxTrackedIPs int
}

func (p Protection) perIP() bool { return p.ConnRate != (Rate{}) || p.FlapConnects > 0 }

// Refusal reasons: the bounded label set of refused connections.
const (
	RefusedDenied      = "ip_denied"       // in Deny
	RefusedNotAllowed  = "ip_not_allowed"  // not in a non-empty Allow
	RefusedIPRate      = "ip_rate"         // over ConnRate
	RefusedIPBanned    = "ip_banned"       // banned for flapping
	RefusedMaxConns    = "max_connections" // the gateway holds MaxConnections
	RefusedMemory      = "max_memory"      // the runtime holds more than MaxMemory
	RefusedCPU         = "max_cpu"         // the process is busier than MaxCPU
	RefusedSwitchedOff = "switched_off"    // new connections switched off (RefuseNew; per app, counted by the handler)
	RefusedDraining    = "draining"        // the node is draining (RefuseNew)
	RefusedAppLimit    = "app_limit"       // an app's max_connections (counted by the handler, not the gateway)
	refusedReasonCount = 9                 // the gateway's own reasons, the first nine
)

// RefusalReasons lists every refusal reason, the gateway's and
// RefusedAppLimit, in a fixed order.
func RefusalReasons() []string {
	return []string{RefusedDenied, RefusedNotAllowed, RefusedIPRate, RefusedIPBanned, RefusedMaxConns, RefusedMemory, RefusedCPU, RefusedSwitchedOff, RefusedDraining, RefusedAppLimit}
}

// Indices of the gateway's reasons in RefusalReasons.
const (
	rDenied = iota
	rNotAllowed
	rIPRate
	rIPBanned
	rMaxConns
	rMemory
	rCPU
	rSwitchedOff
	rDraining
)

// refusal is what admit decided against a connection.
type refusal struct {
	reason     int           // index in RefusalReasons
	retryAfter time.Duration // when trying again may succeed; 0: not soon
}

// ipState is what the tracker keeps per source address: 40 bytes.
type ipState struct {
	conns       bucket // connection rate
	windowStart int64  // unix ms the flap window began
	bannedUntil int64  // unix ms; 0: not banned
	count       int32  // connects in the flap window
	lastSeen    int64  // unix ms of the last connect
}

// ipTracker is the bounded per-address state.
type ipTracker struct {
	mu        sync.Mutex
	m         map[netip.Addr]*ipState
	max       int
	lastSweep int64
}

// admitState is the gateway's admission control.
type admitState struct {
	p       Protection
	ips     ipTracker
	memory  atomic.Uint64 // last sample of the runtime's memory, bytes
	refused [refusedReasonCount]atomic.Uint64
	// lastLog rate-limits the overload log lines: unix ms, per reason.
	lastLog [refusedReasonCount]atomic.Int64
	samples []metrics.Sample
	// cpu is the last sample of the process's busy fraction of its cores
	// (float64 bits), and the CPU time and clock it was taken at.
	cpu          atomic.Uint64
	cpuLast      time.Duration
	cpuLastAt    time.Time
	cpuSampledAt time.Time
	// refuseAll is 1+ the reason every new connection is refused for
	// (RefuseNew); 0 admits.
	refuseAll atomic.Int32
}

// RefuseNew refuses every new connection, for reason RefusedSwitchedOff
// (an operator's switch) or RefusedDraining, until called with "". Open
// connections are not touched.
func (g *Gateway) RefuseNew(reason string) error {
	switch reason {
	case "":
		g.admission.refuseAll.Store(0)
	case RefusedSwitchedOff:
		g.admission.refuseAll.Store(rSwitchedOff + 1)
	case RefusedDraining:
		g.admission.refuseAll.Store(rDraining + 1)
	default:
		return fmt.Errorf("gateway: no refusal reason %q", reason)
	}
	return nil
}

func newAdmitState(p Protection) *admitState {
	if p.MaxTrackedIPs <= 0 {
		p.MaxTrackedIPs = 65536
	}
	if p.ConnRate != (Rate{}) && p.ConnRate.Burst <= 0 {
		p.ConnRate.Burst = max(p.ConnRate.PerSecond, 1)
	}
	a := &admitState{p: p, ips: ipTracker{m: make(map[netip.Addr]*ipState), max: p.MaxTrackedIPs}}
	if p.MaxMemory > 0 {
		a.samples = []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
		a.sampleMemory()
	}
	return a
}

// sampleCPU measures, about once a second, the fraction of its cores the
// process kept busy since the last sample. Wheel goroutine only.
func (a *admitState) sampleCPU(now time.Time) {
	if a.p.MaxCPU <= 0 || a.p.CPUTime == nil || now.Sub(a.cpuSampledAt) < time.Second {
		return
	}
	a.cpuSampledAt = now
	used, ok := a.p.CPUTime()
	if !ok {
		return
	}
	if !a.cpuLastAt.IsZero() {
		if wall := now.Sub(a.cpuLastAt); wall > 0 {
			busy := float64(used-a.cpuLast) / float64(wall) / float64(runtime.GOMAXPROCS(0))
			a.cpu.Store(math.Float64bits(busy))
		}
	}
	a.cpuLast, a.cpuLastAt = used, now
}

// sampleMemory reads the memory the runtime holds from the OS and has not
// released: close to what it costs the machine. It runs on the wheel's
// goroutine only (samples is not shared).
func (a *admitState) sampleMemory() {
	if a.samples == nil {
		return
	}
	metrics.Read(a.samples)
	var total, released uint64
	if a.samples[0].Value.Kind() == metrics.KindUint64 {
		total = a.samples[0].Value.Uint64()
	}
	if a.samples[1].Value.Kind() == metrics.KindUint64 {
		released = a.samples[1].Value.Uint64()
	}
	if released < total {
		total -= released
	}
	a.memory.Store(total)
}

// addrOf returns the IP of a remote address, IPv4 unmapped.
func addrOf(a net.Addr) netip.Addr {
	switch t := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(t.IP)
		return ip.Unmap()
	}
	if a == nil {
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// admit decides whether a new connection from ip may open, and records
// the connect against ip. It returns nil to admit.
func (g *Gateway) admit(ip netip.Addr, nowMilli int64) *refusal {
	a := g.admission
	p := &a.p
	if r := a.refuseAll.Load(); r > 0 {
		retry := 5 * time.Second
		if int(r-1) == rDraining {
			retry = time.Second // to another node
		}
		return a.refuse(g, int(r-1), retry, ip)
	}
	if !ip.IsValid() && len(p.Allow) > 0 {
		return a.refuse(g, rNotAllowed, 0, ip) // an address we cannot read is not on the list
	}
	if ip.IsValid() {
		for _, d := range p.Deny {
			if d.Contains(ip) {
				return a.refuse(g, rDenied, 0, ip)
			}
		}
		if len(p.Allow) > 0 {
			ok := false
			for _, al := range p.Allow {
				if al.Contains(ip) {
					ok = true
					break
				}
			}
			if !ok {
				return a.refuse(g, rNotAllowed, 0, ip)
			}
		}
	}
	// Overload first: an overloaded node does not count connects it
	// refuses anyway against their addresses.
	if p.MaxConnections > 0 && g.stats.open.Load() >= int64(p.MaxConnections) {
		return a.refuse(g, rMaxConns, time.Second, ip)
	}
	if p.MaxMemory > 0 && a.memory.Load() > p.MaxMemory {
		return a.refuse(g, rMemory, time.Second, ip)
	}
	if p.MaxCPU > 0 && math.Float64frombits(a.cpu.Load()) > p.MaxCPU {
		return a.refuse(g, rCPU, time.Second, ip)
	}
	if ip.IsValid() && p.perIP() {
		if r, wait := a.ips.connect(p, ip, nowMilli, g); r >= 0 {
			return a.refuse(g, r, wait, ip)
		}
	}
	return nil
}

// refuse counts a refusal and logs, at most once per second per reason,
// that refusals happen.
func (a *admitState) refuse(g *Gateway, reason int, retry time.Duration, ip netip.Addr) *refusal {
	n := a.refused[reason].Add(1)
	now := g.cfg.Now().UnixMilli()
	if last := a.lastLog[reason].Load(); now-last >= 1000 && a.lastLog[reason].CompareAndSwap(last, now) {
		if reason != rIPBanned { // bans are logged once per ban, by connect
			g.log.Warn("refusing connections", "reason", RefusalReasons()[reason], "remote_ip", ip.String(), "refused_total", n)
		}
	}
	return &refusal{reason: reason, retryAfter: retry}
}

// connect records a connect from ip. It returns the refusal reason (rIPRate
// or rIPBanned) and when to retry, or -1 to admit.
func (t *ipTracker) connect(p *Protection, ip netip.Addr, now int64, g *Gateway) (int, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.m[ip]
	if s == nil {
		if len(t.m) >= t.max {
			t.evict(p, now)
		}
		s = &ipState{windowStart: now}
		if p.ConnRate != (Rate{}) {
			s.conns.fill(p.ConnRate, now)
		}
		t.m[ip] = s
	}
	s.lastSeen = now
	if s.bannedUntil > now {
		return rIPBanned, time.Duration(s.bannedUntil-now) * time.Millisecond
	}
	s.bannedUntil = 0
	if p.FlapConnects > 0 {
		if now-s.windowStart >= p.FlapWindow.Milliseconds() {
			s.windowStart, s.count = now, 0
		}
		s.count++
		if int(s.count) > p.FlapConnects {
			s.bannedUntil = now + p.FlapBan.Milliseconds()
			s.count = 0
			g.log.Warn("banning a source address for flapping", "remote_ip", ip.String(),
				"connects", p.FlapConnects, "window", p.FlapWindow.String(), "ban", p.FlapBan.String())
			return rIPBanned, p.FlapBan
		}
	}
	if p.ConnRate != (Rate{}) && !s.conns.take(p.ConnRate, now) {
		return rIPRate, time.Duration(math.Ceil(1000/float64(p.ConnRate.PerSecond))) * time.Millisecond
	}
	return -1, 0
}

// stale reports whether s says nothing the next connect would not start
// from anew: no ban, the flap window over, the rate bucket full again.
func (s *ipState) stale(p *Protection, now int64) bool {
	if s.bannedUntil > now {
		return false
	}
	idle := now - s.lastSeen
	if p.FlapConnects > 0 && now-s.windowStart < p.FlapWindow.Milliseconds() {
		return false
	}
	if p.ConnRate != (Rate{}) {
		refill := int64(p.ConnRate.Burst) * 1000 / int64(p.ConnRate.PerSecond)
		if idle < refill {
			return false
		}
	}
	return true
}

// sweep drops stale entries. Call with mu held.
func (t *ipTracker) sweep(p *Protection, now int64) {
	t.lastSweep = now
	for ip, s := range t.m {
		if s.stale(p, now) {
			delete(t.m, ip)
		}
	}
}

// evict makes room for one entry: stale ones first, then (the table full
// of live addresses, an attack from many) an arbitrary unbanned one, then
// any. Call with mu held.
func (t *ipTracker) evict(p *Protection, now int64) {
	if now-t.lastSweep >= 100 {
		t.sweep(p, now)
		if len(t.m) < t.max {
			return
		}
	}
	for ip, s := range t.m {
		if s.bannedUntil <= now {
			delete(t.m, ip)
			return
		}
	}
	for ip := range t.m {
		delete(t.m, ip)
		return
	}
}

// tick runs on the wheel's goroutine: it samples memory and sweeps the
// tracker about once a second.
func (a *admitState) tick(now time.Time, lastSweep *time.Time) {
	a.sampleMemory()
	a.sampleCPU(now)
	if !a.p.perIP() || now.Sub(*lastSweep) < time.Second {
		return
	}
	*lastSweep = now
	a.ips.mu.Lock()
	a.ips.sweep(&a.p, now.UnixMilli())
	a.ips.mu.Unlock()
}

// trackedIPs returns how many addresses the tracker holds.
func (a *admitState) trackedIPs() int {
	a.ips.mu.Lock()
	defer a.ips.mu.Unlock()
	return len(a.ips.m)
}

// refuseHTTP answers a refused WebSocket or SSE request: 403 for the
// address lists, 429 for the per-address bounds, 503 for overload, with
// Retry-After (whole seconds, rounded up) when retrying can succeed. The
// connection is closed after the answer.
func refuseHTTP(w http.ResponseWriter, r *refusal) {
	w.Header().Set("Connection", "close")
	if r.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt(int64(math.Ceil(r.retryAfter.Seconds())), 10))
	}
	switch r.reason {
	case rDenied, rNotAllowed:
		writeJSONError(w, http.StatusForbidden, "address_not_allowed", "connections from this address are not allowed")
	case rIPRate:
		writeJSONError(w, http.StatusTooManyRequests, "connection_rate_limited", "too many connections from this address; retry after Retry-After seconds")
	case rIPBanned:
		writeJSONError(w, http.StatusTooManyRequests, "address_banned", "this address connected too often and is banned for a while; retry after Retry-After seconds")
	case rSwitchedOff:
		writeJSONError(w, http.StatusServiceUnavailable, "switched_off", "an operator switched new connections off on this server for now; retry after Retry-After seconds")
	case rDraining:
		writeJSONError(w, http.StatusServiceUnavailable, "draining", "this server is draining; connect to another one")
	default:
		writeJSONError(w, http.StatusServiceUnavailable, "overloaded", fmt.Sprintf("the server takes no new connections now (%s); retry later or elsewhere", RefusalReasons()[r.reason]))
	}
}

// admitHTTP applies admit to a WebSocket or SSE request and answers a
// refused one; it reports whether the request may go on.
func (g *Gateway) admitHTTP(w http.ResponseWriter, req *http.Request) bool {
	var ip netip.Addr
	if ap, err := netip.ParseAddrPort(req.RemoteAddr); err == nil {
		ip = ap.Addr().Unmap()
	}
	r := g.admit(ip, g.cfg.Now().UnixMilli())
	if r == nil {
		return true
	}
	refuseHTTP(w, r)
	return false
}
