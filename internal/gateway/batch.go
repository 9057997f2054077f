package gateway

import (
	"bytes"
	"errors"

	"github.com/gobwas/ws"
	"github.com/lesismal/nbio"

	"github.com/herald-push/herald/protocol"
)

// Batch cache slots, one per encoding a connection may need.
const (
	slotFramed   = iota // length-prefixed binary frames back to back (TCP)
	slotWSBinary        // WebSocket binary messages carrying those frames
	slotWSText          // WebSocket text messages carrying JSON arrays
	slotSSE             // a chunk of SSE events carrying JSON frames
)

// SendBatch writes a batch shared with other connections. The batch's
// transport encoding (for WebSocket the whole message, header included:
// server frames are not masked, so every connection gets the same bytes) is
// built once per batch and written to each socket with one write, without
// copying it per connection.
func (c *Conn) SendBatch(b *protocol.Batch) error {
	if c.state.Load() >= stateClosing {
		return ErrClosed
	}
	var buf []byte
	var err error
	switch {
	case c.transport == SSE:
		buf = b.Cached(slotSSE, c.g.buildSSE)
		err = c.writeSSE(buf)
	case c.tc != nil:
		buf = b.Cached(slotFramed, buildFramed)
		_, err = c.tc.Write(buf)
	case c.nc != nil:
		buf = b.Cached(slotFramed, buildFramed)
		_, err = c.nc.Write(buf)
	case c.Encoding() == JSON:
		buf = b.Cached(slotWSText, c.g.buildWSText)
		_, err = c.ws.Conn.Write(buf)
	default:
		buf = b.Cached(slotWSBinary, buildWSBinary)
		_, err = c.ws.Conn.Write(buf)
	}
	if err != nil {
		if errors.Is(err, nbio.ErrOverflow) {
			c.setReason(protocol.NewDisconnect(protocol.DisconnectSlowConsumer))
		}
		return err
	}
	c.g.stats.framesOut.Add(uint64(len(b.Frames())))
	c.g.stats.bytesOut.Add(uint64(len(buf)))
	c.g.stats.writes.Add(1)
	if r := c.g.cfg.Latency; r != nil {
		r.Delivered(b.Frames(), c.id)
	}
	return nil
}

func buildFramed(frames []*protocol.Encoded) []byte {
	return protocol.AppendFramedBatch(nil, frames)
}

// buildWSBinary encodes frames as WebSocket binary messages of at most
// maxBatch bytes of payload each (a frame larger than that alone).
func buildWSBinary(frames []*protocol.Encoded) []byte {
	var out bytes.Buffer
	var payload []byte
	flush := func() {
		if len(payload) > 0 {
			_ = ws.WriteHeader(&out, ws.Header{Fin: true, OpCode: ws.OpBinary, Length: int64(len(payload))})
			out.Write(payload)
			payload = payload[:0]
		}
	}
	for _, f := range frames {
		b := f.Framed()
		if len(payload) > 0 && len(payload)+len(b) > maxBatch {
			flush()
		}
		payload = append(payload, b...)
	}
	flush()
	return out.Bytes()
}

// buildWSText encodes frames as WebSocket text messages, each one JSON
// object or an array of them, within the receiver's frame limit.
func (g *Gateway) buildWSText(frames []*protocol.Encoded) []byte {
	var out bytes.Buffer
	g.jsonBatches(frames, func(msg []byte) {
		_ = ws.WriteHeader(&out, ws.Header{Fin: true, OpCode: ws.OpText, Length: int64(len(msg))})
		out.Write(msg)
	})
	return out.Bytes()
}

// jsonBatches splits frames into runs whose JSON (one object, or an array
// of them) fits the receiver's frame limit, and hands each run's JSON to
// emit, in order.
func (g *Gateway) jsonBatches(frames []*protocol.Encoded, emit func(msg []byte)) {
	limit := min(maxBatch, g.cfg.Limits.MaxFrame)
	var run []*protocol.Encoded
	size := 1 // "[" and "]" less the one separator counted per frame
	flush := func() {
		if len(run) == 0 {
			return
		}
		emit(protocol.AppendJSONBatch(nil, run))
		run, size = run[:0], 1
	}
	for _, f := range frames {
		s := len(f.JSON()) + 1
		if len(run) > 0 && size+s > limit {
			flush()
		}
		run = append(run, f)
		size += s
	}
	flush()
}
