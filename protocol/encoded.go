package protocol

import "sync"

// Encoded is a frame encoded at most once per encoding and shared by every
// connection it is written to: a broadcast to 19,000 connections encodes its
// PUSH once, not 19,000 times. It is safe for concurrent use; the frame must
// not be modified after Encode.
type Encoded struct {
	frame    *Frame
	at       int64  // SetStamp's time; 0 when not stamped
	tag      uint32 // SetStamp's tag
	binOnce  sync.Once
	bin      []byte
	jsonOnce sync.Once
	json     []byte
}

// Encode wraps f for shared, lazy encoding.
func Encode(f *Frame) *Encoded { return &Encoded{frame: f} }

// Frame returns the frame. Callers must not modify it.
func (e *Encoded) Frame() *Frame { return e.frame }

// SetStamp records when the frame's message was accepted, as a reading
// of the caller's monotonic clock (never 0), and an opaque tag the
// caller uses to classify it (for example by app and kind). Servers use
// it to measure delivery latency where the frame is written. It must be
// called before the frame is shared with other goroutines.
func (e *Encoded) SetStamp(at int64, tag uint32) { e.at, e.tag = at, tag }

// Stamp returns what SetStamp recorded; at is 0 for a frame never
// stamped.
func (e *Encoded) Stamp() (at int64, tag uint32) { return e.at, e.tag }

// Framed returns the length-prefixed binary encoding. Callers must not
// modify the returned slice.
func (e *Encoded) Framed() []byte {
	e.binOnce.Do(func() { e.bin = AppendFramed(nil, e.frame) })
	return e.bin
}

// JSON returns the JSON object encoding. Callers must not modify the
// returned slice.
func (e *Encoded) JSON() []byte {
	e.jsonOnce.Do(func() { e.json = AppendJSON(nil, e.frame) })
	return e.json
}

// AppendJSONBatch appends frames as one JSON text message: the object itself
// for one frame, an array of objects for several.
func AppendJSONBatch(dst []byte, frames []*Encoded) []byte {
	if len(frames) == 1 {
		return append(dst, frames[0].JSON()...)
	}
	dst = append(dst, '[')
	for i, e := range frames {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, e.JSON()...)
	}
	return append(dst, ']')
}

// AppendFramedBatch appends frames as one binary message or TCP write: their
// length-prefixed encodings back to back.
func AppendFramedBatch(dst []byte, frames []*Encoded) []byte {
	for _, e := range frames {
		dst = append(dst, e.Framed()...)
	}
	return dst
}

// BatchSlots is the number of transport encodings a Batch can cache.
const BatchSlots = 4

// Batch is a run of frames written together to many connections, such as
// the messages of one fan-out pass. Transports cache their encoding of the
// whole run on it (for example the WebSocket message, header included), so
// that writing it to 19,000 connections encodes it once and then only
// copies bytes into sockets. It is safe for concurrent use.
type Batch struct {
	frames []*Encoded
	slots  [BatchSlots]struct {
		once sync.Once
		b    []byte
	}
}

// NewBatch returns a batch of frames. The slice must not be modified after.
func NewBatch(frames ...*Encoded) *Batch { return &Batch{frames: frames} }

// Frames returns the frames of the batch. Callers must not modify it.
func (b *Batch) Frames() []*Encoded { return b.frames }

// Cached returns build(frames), computed once per slot for the life of the
// batch. Each transport uses its own slot number (0 to BatchSlots-1).
// Callers must not modify the returned slice.
func (b *Batch) Cached(slot int, build func(frames []*Encoded) []byte) []byte {
	s := &b.slots[slot]
	s.once.Do(func() { s.b = build(b.frames) })
	return s.b
}
