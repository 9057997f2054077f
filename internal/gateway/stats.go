package gateway

import (
	"sync/atomic"

	"github.com/herald-push/herald/protocol"
)

// Stats is a snapshot of the gateway's counters.
type Stats struct {
	Open         int64  // connections open now
	Accepted     uint64 // connections accepted since start
	FramesIn     uint64 // frames decoded from clients
	FramesOut    uint64 // frames written to clients
	BytesOut     uint64 // bytes of frames written to clients
	Writes       uint64 // write calls (messages) to clients; FramesOut/Writes is the batching factor
	DecodeErrors uint64 // frames that failed to decode
	RateLimited  uint64 // connections closed for going over a rate (frames, subscriptions)
	// OriginRefused counts WebSocket and SSE requests refused for their
	// Origin.
	OriginRefused uint64
	// Refused counts connections refused at accept, by reason (every
	// RefusalReasons entry but RefusedAppLimit, which the handler counts).
	Refused map[string]uint64
	// TrackedIPs is how many source addresses the per-address
	// connection limits keep state for.
	TrackedIPs int
	// Disconnects counts closed connections by reason.
	Disconnects map[protocol.DisconnectCode]uint64
}

const firstCode, lastCode = protocol.DisconnectNormal, protocol.DisconnectAppConnectionLimit

type counters struct {
	open          atomic.Int64
	accepted      atomic.Uint64
	framesIn      atomic.Uint64
	framesOut     atomic.Uint64
	bytesOut      atomic.Uint64
	writes        atomic.Uint64
	decodeErrors  atomic.Uint64
	rateLimited   atomic.Uint64
	originRefused atomic.Uint64
	disconnects   [lastCode - firstCode + 2]atomic.Uint64 // last slot: unknown codes
}

func (c *counters) disconnect(code protocol.DisconnectCode) {
	i := int(lastCode-firstCode) + 1
	if code >= firstCode && code <= lastCode {
		i = int(code - firstCode)
	}
	c.disconnects[i].Add(1)
}

// Stats returns a snapshot of the gateway's counters.
func (g *Gateway) Stats() Stats {
	s := Stats{
		Open:          g.stats.open.Load(),
		Accepted:      g.stats.accepted.Load(),
		FramesIn:      g.stats.framesIn.Load(),
		FramesOut:     g.stats.framesOut.Load(),
		BytesOut:      g.stats.bytesOut.Load(),
		Writes:        g.stats.writes.Load(),
		DecodeErrors:  g.stats.decodeErrors.Load(),
		RateLimited:   g.stats.rateLimited.Load(),
		OriginRefused: g.stats.originRefused.Load(),
		Disconnects:   make(map[protocol.DisconnectCode]uint64),
	}
	s.Refused = make(map[string]uint64, refusedReasonCount)
	for i, r := range RefusalReasons()[:refusedReasonCount] {
		s.Refused[r] = g.admission.refused[i].Load()
	}
	s.TrackedIPs = g.admission.trackedIPs()
	for code := firstCode; code <= lastCode; code++ {
		s.Disconnects[code] = g.stats.disconnects[code-firstCode].Load()
	}
	return s
}
