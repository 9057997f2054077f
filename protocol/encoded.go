package protocol

import "sync"

// Encoded is a frame encoded at most once per encoding and shared by every
// connection it is written to: a broadcast to 19,000 connections encodes its
// PUSH once, not 19,000 times. It is safe for concurrent use; the frame must
// not be modified after Encode.
type Encoded struct {
	frame    *Frame
	binOnce  sync.Once
	bin      []byte
	jsonOnce sync.Once
	json     []byte
}

// Encode wraps f for shared, lazy encoding.
func Encode(f *Frame) *Encoded { return &Encoded{frame: f} }

// Frame returns the frame. Callers must not modify it.
func (e *Encoded) Frame() *Frame { return e.frame }

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
