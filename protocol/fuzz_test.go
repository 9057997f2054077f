package protocol

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

// Seed corpora are also committed under testdata/fuzz/<FuzzName>/.

// fuzzLimits are DefaultLimits with a small MaxResume, so the fuzzer reaches
// the resume limit quickly.
func fuzzLimits() Limits {
	lim := DefaultLimits()
	lim.MaxResume = 4
	return lim
}

// reencodeLimits accept a re-encoding that grew: JSON escaping can make
// an encoding longer than the frame it came from.
func reencodeLimits(lim Limits) Limits {
	lim.MaxFrame = 1 << 30
	return lim
}

// jsonNormalPayload is what a payload becomes after a trip through the JSON
// encoding: a JSON value that AppendJSON sends as "data" loses its
// insignificant whitespace; everything else is kept byte for byte.
func jsonNormalPayload(p []byte) []byte {
	if len(p) == 0 {
		return nil
	}
	if isJSONData(p) {
		return appendCompact(nil, p)
	}
	return p
}

// stringsValid reports whether every string field of f is valid UTF-8.
func stringsValid(f *Frame) bool {
	for _, s := range []string{f.Token, f.Device, f.Client, f.Session, f.Node, f.Stream, f.Topic, f.Epoch, f.MsgID, f.Reason, f.Alt} {
		if !utf8.ValidString(s) {
			return false
		}
	}
	for _, p := range f.Resume {
		if !utf8.ValidString(p.Stream) || !utf8.ValidString(p.Epoch) {
			return false
		}
	}
	return true
}

func FuzzDecodeBinary(f *testing.F) {
	for _, fr := range sampleFrames() {
		f.Add(AppendBinary(nil, fr))
	}
	f.Add([]byte{})
	f.Add([]byte{EncodingVersion, byte(TypePing), 0xff, 0xff})
	// JSON text that a JSON client could not get as "data": it goes as b64
	f.Add(AppendBinary(nil, &Frame{Type: TypePush, Stream: "b", Payload: []byte(`"\ud800"`)}))
	f.Fuzz(func(t *testing.T, in []byte) {
		lim := fuzzLimits()
		var got Frame
		err := DecodeBinary(in, &got, lim)
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("error %q wraps no sentinel", err)
			}
			return
		}
		enc := AppendBinary(nil, &got)
		if len(enc) > len(in) {
			t.Fatalf("re-encoding grew from %d to %d bytes", len(in), len(enc))
		}
		var again Frame
		if err := DecodeBinary(enc, &again, lim); err != nil {
			t.Fatalf("re-decode of % x: %v", enc, err)
		}
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", again, got)
		}

		// the same frame survives the JSON encoding, payload normalised
		js := AppendJSON(nil, &got)
		if !utf8.Valid(js) || !json.Valid(js) {
			t.Fatalf("AppendJSON made invalid JSON: %q", js)
		}
		var viaJSON Frame
		if err := DecodeJSON(js, &viaJSON, reencodeLimits(lim)); err != nil {
			t.Fatalf("decode of %s: %v", js, err)
		}
		want := got
		want.Payload = jsonNormalPayload(got.Payload)
		if !reflect.DeepEqual(viaJSON, want) {
			t.Fatalf("via JSON %s:\n got %+v\nwant %+v", js, viaJSON, want)
		}
	})
}

// streamResult is what a connection reader makes of a byte stream.
type streamResult struct {
	Frames []Frame
	Err    string
	Rest   int // bytes of an incomplete frame at the end; -1 after an error
}

func readStream(lim Limits, pieces ...[]byte) streamResult {
	r := &frameReader{lim: lim}
	for _, p := range pieces {
		r.write(p)
	}
	res := streamResult{Frames: r.frames, Rest: len(r.buf)}
	if r.err != nil {
		// the reader stops at the error and reads no further pieces
		res.Err, res.Rest = r.err.Error(), -1
	}
	return res
}

func FuzzNextFramed(f *testing.F) {
	var stream []byte
	for _, fr := range sampleFrames() {
		framed := AppendFramed(nil, fr)
		f.Add(framed, uint(len(framed)/2))
		stream = append(stream, framed...)
	}
	f.Add(stream, uint(0))
	f.Add(stream, uint(3))
	f.Add(stream, uint(len(stream)/2))
	f.Add(append(append([]byte(nil), stream...), 0, 0, 0, 0, 1), uint(len(stream)+2))
	f.Add([]byte{0, 1, 0, 1, 1}, uint(2))
	f.Fuzz(func(t *testing.T, in []byte, split uint) {
		lim := fuzzLimits()
		lim.MaxFrame = 4096 // so that declared lengths can be both over and under it
		at := int(split % uint(len(in)+1))

		// NextFramed itself: a frame is n bytes of buf, or nothing
		body, n, err := NextFramed(in, lim)
		switch {
		case err != nil:
			if body != nil || n != 0 || !wrapsSentinel(err) {
				t.Fatalf("NextFramed = %d bytes, %d, %v", len(body), n, err)
			}
		case n == 0:
			if body != nil {
				t.Fatalf("NextFramed returned a body without using bytes")
			}
		default:
			if n != PrefixSize+len(body) || n > len(in) || len(body) == 0 || !bytes.Equal(in[PrefixSize:n], body) {
				t.Fatalf("NextFramed = % x, %d for % x", body, n, in)
			}
		}

		whole := readStream(lim, in)
		pieces := readStream(lim, in[:at], in[at:])
		if !reflect.DeepEqual(whole, pieces) {
			t.Fatalf("split at %d:\n got %+v\nwant %+v", at, pieces, whole)
		}
	})
}

func FuzzDecodeJSON(f *testing.F) {
	for _, fr := range sampleFrames() {
		f.Add(AppendJSON(nil, fr))
	}
	f.Add([]byte(`{"type":"uplink","data": { "a" : [1, 2] } }`))
	f.Add([]byte(`{"type":"uplink","b64":"IG51bGwg"}`))
	f.Add([]byte(`{"type":"push","stream":"b","data":null,"b64":"AA=="}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		lim := fuzzLimits()
		var first Frame
		err := DecodeJSON(in, &first, lim)
		if err != nil {
			if !wrapsSentinel(err) {
				t.Fatalf("error %q wraps no sentinel", err)
			}
			return
		}
		// nothing was rewritten: the message was valid UTF-8 without lone
		// surrogate escapes, so every string is valid UTF-8 too
		if !utf8.Valid(in) || !stringsValid(&first) {
			t.Fatalf("accepted %q, decoded to invalid UTF-8: %+v", in, first)
		}
		enc := AppendJSON(nil, &first)
		if !utf8.Valid(enc) || !json.Valid(enc) {
			t.Fatalf("AppendJSON made invalid JSON: %q", enc)
		}
		var second Frame
		if err := DecodeJSON(enc, &second, reencodeLimits(lim)); err != nil {
			t.Fatalf("re-decode of %s: %v", enc, err)
		}
		// Equal, except that a payload that came as "b64" but is a JSON
		// value travels as "data" and is compacted.
		want := first
		want.Payload = jsonNormalPayload(first.Payload)
		if !reflect.DeepEqual(second, want) {
			t.Fatalf("decode→encode→decode of %s:\n got %+v\nwant %+v", enc, second, want)
		}
		// and from then on the encoding is a fixed point
		if enc2 := AppendJSON(nil, &second); !bytes.Equal(enc2, enc) {
			t.Fatalf("second encoding differs:\n%s\n%s", enc2, enc)
		}

		// the decoded frame survives the binary encoding exactly
		bin := AppendBinary(nil, &first)
		var viaBinary Frame
		if err := DecodeBinary(bin, &viaBinary, reencodeLimits(lim)); err != nil {
			t.Fatalf("binary decode of %+v: %v", first, err)
		}
		if !reflect.DeepEqual(viaBinary, first) {
			t.Fatalf("via binary:\n got %+v\nwant %+v", viaBinary, first)
		}
	})
}

func FuzzDecodeJSONBatch(f *testing.F) {
	all := sampleFrames()
	for _, fr := range all {
		f.Add(AppendJSON(nil, fr))
	}
	f.Add(AppendJSONBatch(nil, encodeAll(all)))
	f.Add([]byte(` [ ] `))
	f.Add([]byte(`[{"type":"ping"},{"type":"nope"}]`))
	f.Fuzz(func(t *testing.T, in []byte) {
		lim := fuzzLimits()
		frames, err := DecodeJSONBatch(in, lim)
		if err != nil {
			if frames != nil || !wrapsSentinel(err) {
				t.Fatalf("DecodeJSONBatch = %d frames, %q", len(frames), err)
			}
			return
		}
		// a batch re-encodes to a batch of the same length
		enc := make([]*Encoded, len(frames))
		for i := range frames {
			enc[i] = Encode(&frames[i])
		}
		again, err := DecodeJSONBatch(AppendJSONBatch(nil, enc), reencodeLimits(lim))
		if err != nil || len(again) != len(frames) {
			t.Fatalf("re-decode: %d frames of %d, %v", len(again), len(frames), err)
		}
	})
}
