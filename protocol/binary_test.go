package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// body builds binary frame bodies by hand, so tests can write what the
// encoder never would.
type body []byte

func newBody(t Type) body { return body{EncodingVersion, byte(t)} }

func (b body) varint(num, v uint64) body {
	b = binary.AppendUvarint(b, num<<1|wireVarint)
	return binary.AppendUvarint(b, v)
}

func (b body) bytes(num uint64, v []byte) body {
	b = binary.AppendUvarint(b, num<<1|wireBytes)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func (b body) str(num uint64, s string) body { return b.bytes(num, []byte(s)) }

func (b body) raw(p ...byte) body { return append(b, p...) }

// position encodes a resume position's inner fields.
func position(stream, epoch string, seq uint64) []byte {
	return body{}.str(fieldStream, stream).str(fieldEpoch, epoch).varint(fieldSeq, seq)
}

var sentinels = []error{ErrMalformed, ErrTooLarge, ErrUnknownType, ErrBadVersion, ErrMissingField}

// checkSentinel fails unless err wraps exactly the sentinel want.
func checkSentinel(t *testing.T, err, want error) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	for _, s := range sentinels {
		if got := errors.Is(err, s); got != (s == want) {
			t.Fatalf("errors.Is(%q, %v) = %v", err, s, got)
		}
	}
}

// wrapsSentinel reports whether err wraps one of the package's sentinels,
// as every decoding error must.
func wrapsSentinel(err error) bool {
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func smallLimits() Limits {
	return Limits{MaxFrame: 256, MaxPayload: 16, MaxString: 8, MaxResume: 2}
}

func TestDecodeBinaryErrors(t *testing.T) {
	def := DefaultLimits()
	small := smallLimits()
	push := newBody(TypePush).str(fieldStream, "t:x")
	tests := []struct {
		name string
		body []byte
		lim  Limits
		want error
	}{
		// envelope
		{"empty", nil, def, ErrMalformed},
		{"version only", []byte{EncodingVersion}, def, ErrMalformed},
		{"version 0", []byte{0, byte(TypePing)}, def, ErrBadVersion},
		{"version 2", []byte{2, byte(TypePing)}, def, ErrBadVersion},
		{"version 255", []byte{255, byte(TypePing), 0xff}, def, ErrBadVersion},
		{"type 0", []byte{EncodingVersion, 0}, def, ErrUnknownType},
		{"type 13", []byte{EncodingVersion, 13}, def, ErrUnknownType},
		{"type 255", []byte{EncodingVersion, 255}, def, ErrUnknownType},
		{"over max frame", append(newBody(TypePing), make([]byte, 255)...), small, ErrTooLarge},

		// varints
		{"tag truncated", newBody(TypePing).raw(0x80), def, ErrMalformed},
		{"tag overflow", newBody(TypePing).raw(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f), def, ErrMalformed},
		{"value missing", newBody(TypePing).raw(fieldTime << 1), def, ErrMalformed},
		{"value truncated", newBody(TypePing).raw(fieldTime<<1, 0x80, 0x80), def, ErrMalformed},
		{"value overflow", newBody(TypePing).raw(fieldTime<<1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02), def, ErrMalformed},
		{"length missing", newBody(TypePing).raw(fieldReason<<1 | 1), def, ErrMalformed},
		{"length truncated", newBody(TypePing).raw(fieldReason<<1|1, 0xff), def, ErrMalformed},
		{"field number 0 varint", newBody(TypePing).raw(0, 1), def, ErrMalformed},
		{"field number 0 bytes", newBody(TypePing).raw(1, 0), def, ErrMalformed},

		// lengths
		{"length past end", newBody(TypePing).raw(fieldReason<<1|1, 5, 'a', 'b'), def, ErrMalformed},
		{"length past end by one", newBody(TypePing).raw(fieldReason<<1|1, 3, 'a', 'b'), def, ErrMalformed},
		{"huge length", newBody(TypePing).raw(fieldReason<<1|1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), def, ErrMalformed},
		{"unknown field past end", append(binary.AppendUvarint(newBody(TypePing), 99<<1|1), 0x7f), def, ErrMalformed},
		{"resume inner past end", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, []byte{fieldStream<<1 | 1, 9, 'u'}), def, ErrMalformed},
		{"resume inner bad tag", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, []byte{0x80}), def, ErrMalformed},
		{"resume inner field 0", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, append(position("u:a", "", 1), 0, 1)), def, ErrMalformed},
		{"resume inner unknown varint truncated", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, append(position("u:a", "", 1), 30<<1, 0xff)), def, ErrMalformed},
		{"resume inner bad varint", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, append(position("u:a", "", 0), fieldSeq<<1, 0x80)), def, ErrMalformed},

		// ranges of 32-bit and duration fields
		{"id over 32 bits", newBody(TypeReply).varint(fieldID, 1<<32), def, ErrMalformed},
		{"version over 32 bits", newBody(TypeConnect).str(fieldToken, "t").varint(fieldVersion, 1<<32), def, ErrMalformed},
		{"code over 32 bits", newBody(TypeError).varint(fieldCode, 1<<32), def, ErrMalformed},
		{"heartbeat overflows duration", newBody(TypeConnected).varint(fieldHeartbeat, 1<<62), def, ErrMalformed},

		// sizes
		{"payload over limit", push.bytes(fieldPayload, make([]byte, 17)), small, ErrTooLarge},
		{"token over limit", newBody(TypeConnect).str(fieldToken, "123456789"), small, ErrTooLarge},
		{"reason over limit", newBody(TypeError).str(fieldReason, "123456789"), small, ErrTooLarge},
		{"resume stream over limit", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, position("u:123456789", "", 1)), small, ErrTooLarge},
		{"resume epoch over limit", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, position("u:a", "123456789", 1)), small, ErrTooLarge},
		{"resume list over limit", newBody(TypeConnect).str(fieldToken, "t").
			bytes(fieldResume, position("u:a", "", 1)).
			bytes(fieldResume, position("t:b", "", 1)).
			bytes(fieldResume, position("b", "", 1)), small, ErrTooLarge},

		// UTF-8
		{"token not UTF-8", newBody(TypeConnect).str(fieldToken, "a\xffb"), def, ErrMalformed},
		{"stream not UTF-8", newBody(TypePush).str(fieldStream, "t:\xc3"), def, ErrMalformed},
		{"reason surrogate", newBody(TypeError).str(fieldReason, "\xed\xa0\x80"), def, ErrMalformed},
		{"alt overlong", newBody(TypeDisconnect).str(fieldAlt, "\xc0\xaf"), def, ErrMalformed},
		{"resume stream not UTF-8", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, position("u:\xff", "", 1)), def, ErrMalformed},
		{"resume epoch not UTF-8", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, position("u:a", "\xff", 1)), def, ErrMalformed},

		// wrong wire type inside a resume position
		{"resume seq as bytes", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, body{}.str(fieldStream, "u:a").str(fieldSeq, "1")), def, ErrMalformed},
		{"resume stream as varint", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, body{}.varint(fieldStream, 1).str(fieldStream, "u:a")), def, ErrMalformed},
		{"resume epoch as varint", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, body{}.str(fieldStream, "u:a").varint(fieldEpoch, 1)), def, ErrMalformed},

		// required fields
		{"connect without token", newBody(TypeConnect).varint(fieldVersion, 1), def, ErrMissingField},
		{"connect with empty token", newBody(TypeConnect).str(fieldToken, ""), def, ErrMissingField},
		{"subscribe without topic", newBody(TypeSubscribe).varint(fieldID, 1), def, ErrMissingField},
		{"unsubscribe without topic", newBody(TypeUnsubscribe).varint(fieldID, 1), def, ErrMissingField},
		{"ack without stream", newBody(TypeAck).varint(fieldSeq, 1), def, ErrMissingField},
		{"ack without seq", newBody(TypeAck).str(fieldStream, "u:a"), def, ErrMissingField},
		{"push without stream", newBody(TypePush).varint(fieldSeq, 1), def, ErrMissingField},
		{"resume without stream", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, position("", "e", 1)), def, ErrMissingField},
		{"empty resume position", newBody(TypeConnect).str(fieldToken, "t").bytes(fieldResume, nil), def, ErrMissingField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := Frame{Type: TypePing, Token: "stale"} // must be reset
			err := DecodeBinary(tt.body, &f, tt.lim)
			checkSentinel(t, err, tt.want)
			if f.Token == "stale" {
				t.Fatalf("DecodeBinary did not reset the frame")
			}
		})
	}
}

// Every known field sent with the other wire type is malformed.
func TestDecodeBinaryWrongWireType(t *testing.T) {
	varintFields := map[uint64]bool{fieldID: true, fieldVersion: true, fieldHeartbeat: true,
		fieldSeq: true, fieldTime: true, fieldCode: true, fieldReconnect: true, fieldRecovered: true}
	for num := uint64(fieldID); num <= fieldRecovered; num++ {
		b := newBody(TypePing)
		if varintFields[num] {
			b = b.str(num, "1")
		} else {
			b = b.varint(num, 1)
		}
		var f Frame
		err := DecodeBinary(b, &f, DefaultLimits())
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("field %d with wrong wire type: err = %v, want ErrMalformed", num, err)
		}
	}
}

// Fields a later version may add are skipped, at the top level and inside
// resume positions, whatever their wire type and wherever they appear.
func TestDecodeBinaryUnknownFieldsSkipped(t *testing.T) {
	lim := DefaultLimits()
	unknown := func(b body) body {
		return b.varint(fieldRecovered+1, 7).str(fieldRecovered+2, "future").varint(1000, 1<<63).bytes(1<<40, []byte{0, 1, 2}).bytes(99, nil)
	}
	want := &Frame{Type: TypeConnect, Version: 1, Token: "tok", Resume: []Position{{Stream: "u:a", Epoch: "e", Seq: 3}}}
	pos := unknown(body{}.str(fieldStream, "u:a")).str(fieldEpoch, "e").varint(4, 9).varint(fieldSeq, 3).str(fieldToken, "inner")
	b := unknown(newBody(TypeConnect))
	b = b.varint(fieldVersion, 1)
	b = unknown(b)
	b = b.str(fieldToken, "tok").bytes(fieldResume, pos)
	b = unknown(b)

	var got Frame
	if err := DecodeBinary(b, &got, lim); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if !reflect.DeepEqual(&got, want) {
		t.Fatalf("got %+v\nwant %+v", got, *want)
	}
	if enc := AppendBinary(nil, &got); len(enc) >= len(b) {
		t.Fatalf("re-encoding kept unknown fields: %d bytes from %d", len(enc), len(b))
	}
}

// The decoder accepts fields in any order, repeated scalars (last wins) and
// overlong varints.
func TestDecodeBinaryLenient(t *testing.T) {
	b := newBody(TypePush).varint(fieldSeq, 1).str(fieldStream, "u:a").varint(fieldSeq, 2).
		raw(fieldTime<<1, 0x82, 0x80, 0x80, 0x00) // zigzag 2 = +1, in four bytes
	var got Frame
	if err := DecodeBinary(b, &got, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	want := Frame{Type: TypePush, Stream: "u:a", Seq: 2, Time: 1}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestDecodeBinaryLimitsInclusive(t *testing.T) {
	lim := smallLimits()
	b := newBody(TypePush).str(fieldStream, "12345678").bytes(fieldPayload, make([]byte, 16))
	var f Frame
	if err := DecodeBinary(b, &f, lim); err != nil {
		t.Fatalf("values at the limits: %v", err)
	}
	lim.MaxFrame = len(b)
	if err := DecodeBinary(b, &f, lim); err != nil {
		t.Fatalf("frame of exactly MaxFrame: %v", err)
	}
	lim.MaxFrame--
	checkSentinel(t, DecodeBinary(b, &f, lim), ErrTooLarge)
}

func TestDecodeBinaryDoesNotAlias(t *testing.T) {
	in := &Frame{Type: TypePush, Stream: "u:a", Payload: []byte("abc"), MsgID: "m"}
	b := AppendBinary(nil, in)
	var f Frame
	if err := DecodeBinary(b, &f, DefaultLimits()); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'X'
	}
	if string(f.Payload) != "abc" || f.Stream != "u:a" || f.MsgID != "m" {
		t.Fatalf("decoded frame aliases the input: %+v", f)
	}
}

// Cutting a body anywhere either fails with ErrMalformed or
// ErrMissingField, or, at a field boundary, yields a frame whose encoding is
// exactly the prefix.
func TestDecodeBinaryTruncated(t *testing.T) {
	lim := DefaultLimits()
	for _, f := range sampleFrames() {
		t.Run(f.Type.String(), func(t *testing.T) {
			full := AppendBinary(nil, f)
			failures := 0
			for i := 0; i < len(full); i++ {
				var got Frame
				err := DecodeBinary(full[:i], &got, lim)
				if err != nil {
					failures++
					if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrMissingField) {
						t.Fatalf("cut at %d: %v", i, err)
					}
					continue
				}
				if enc := AppendBinary(nil, &got); !bytes.Equal(enc, full[:i]) {
					t.Fatalf("cut at %d decoded to %+v, which encodes as % x, not % x", i, got, enc, full[:i])
				}
			}
			if failures < 2 {
				t.Fatalf("only %d of %d cuts failed", failures, len(full))
			}
			// the same cuts inside a length prefix are incomplete, not errors
			framed := AppendFramed(nil, f)
			for i := 0; i < len(framed); i++ {
				b, n, err := NextFramed(framed[:i], lim)
				if b != nil || n != 0 || err != nil {
					t.Fatalf("NextFramed of %d of %d bytes = %q, %d, %v", i, len(framed), b, n, err)
				}
			}
		})
	}
}

func TestBinaryEncoding(t *testing.T) {
	tests := []struct {
		name string
		f    Frame
		want []byte
	}{
		{"zero fields omitted", Frame{Type: TypePong}, []byte{1, 8}},
		{"ping time zigzag -1", Frame{Type: TypePing, Time: -1}, []byte{1, 7, 32, 1}},
		{"ping time zigzag 1", Frame{Type: TypePing, Time: 1}, []byte{1, 7, 32, 2}},
		{"heartbeat in ms", Frame{Type: TypeConnected, Heartbeat: 1500 * time.Millisecond}, []byte{1, 2, 18, 0xdc, 0x0b}},
		{"sub-ms heartbeat omitted", Frame{Type: TypeConnected, Heartbeat: time.Microsecond}, []byte{1, 2}},
		{"negative heartbeat omitted", Frame{Type: TypeConnected, Heartbeat: -time.Second}, []byte{1, 2}},
		{"reconnect", Frame{Type: TypeDisconnect, Code: 3001, Reconnect: true}, []byte{1, 9, 34, 0xb9, 0x17, 38, 1}},
		{"subscribe", Frame{Type: TypeSubscribe, ID: 1, Topic: "a"}, []byte{1, 5, 2, 1, 23, 1, 'a'}},
		{"empty payload omitted", Frame{Type: TypePush, Stream: "b", Payload: []byte{}}, []byte{1, 3, 21, 1, 'b'}},
		{"resume", Frame{Type: TypeConnect, Token: "t", Resume: []Position{{Stream: "b", Seq: 2}}},
			[]byte{1, 1, 7, 1, 't', 13, 5, 21, 1, 'b', 26, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AppendBinary(nil, &tt.f); !bytes.Equal(got, tt.want) {
				t.Fatalf("got  % x\nwant % x", got, tt.want)
			}
		})
	}
}

func TestAppendFramedAppends(t *testing.T) {
	f := &Frame{Type: TypeAck, Stream: "u:a", Seq: 5}
	prefix := []byte("xyz")
	got := AppendFramed(append([]byte(nil), prefix...), f)
	if !bytes.HasPrefix(got, prefix) {
		t.Fatalf("lost the prefix: % x", got)
	}
	b := AppendBinary(nil, f)
	if n := binary.BigEndian.Uint32(got[3:]); int(n) != len(b) || !bytes.Equal(got[7:], b) {
		t.Fatalf("got % x, want length %d then % x", got, len(b), b)
	}
}

func TestNextFramed(t *testing.T) {
	lim := smallLimits() // MaxFrame 256
	ping := AppendBinary(nil, &Frame{Type: TypePing})
	framedPing := AppendFramed(nil, &Frame{Type: TypePing})
	twoPings := append(append([]byte(nil), framedPing...), framedPing...)
	maxBody := make([]byte, lim.MaxFrame)
	atMax := binary.BigEndian.AppendUint32(nil, uint32(lim.MaxFrame))
	atMax = append(atMax, maxBody...)
	tests := []struct {
		name     string
		buf      []byte
		wantBody []byte
		wantN    int
		wantErr  error
	}{
		{"nil", nil, nil, 0, nil},
		{"1 byte", []byte{0}, nil, 0, nil},
		{"3 bytes", []byte{0, 0, 0}, nil, 0, nil},
		{"prefix only", []byte{0, 0, 0, 2}, nil, 0, nil},
		{"prefix and part of body", []byte{0, 0, 0, 2, 1}, nil, 0, nil},
		{"whole", framedPing, ping, len(framedPing), nil},
		{"two frames yields the first", twoPings, ping, len(framedPing), nil},
		{"whole and part of the next", twoPings[:len(twoPings)-1], ping, len(framedPing), nil},
		{"exactly max frame", atMax, maxBody, len(atMax), nil},
		{"partial max frame", atMax[:100], nil, 0, nil},
		{"zero length", []byte{0, 0, 0, 0}, nil, 0, ErrMalformed},
		{"zero length before a frame", append([]byte{0, 0, 0, 0}, framedPing...), nil, 0, ErrMalformed},
		{"one over max frame", []byte{0, 0, 1, 1}, nil, 0, ErrTooLarge},
		{"over max frame without body", []byte{0, 1, 0, 0}, nil, 0, ErrTooLarge},
		{"max uint32", []byte{0xff, 0xff, 0xff, 0xff}, nil, 0, ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, n, err := NextFramed(tt.buf, lim)
			if tt.wantErr != nil {
				checkSentinel(t, err, tt.wantErr)
			} else if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if n != tt.wantN || !bytes.Equal(b, tt.wantBody) || (tt.wantBody == nil) != (b == nil) {
				t.Fatalf("got body % x, n %d; want % x, %d", b, n, tt.wantBody, tt.wantN)
			}
		})
	}
}

// frameReader reassembles frames from a byte stream that arrives in pieces,
// as a TCP connection reader does.
type frameReader struct {
	lim    Limits
	buf    []byte
	frames []Frame
	err    error
}

func (r *frameReader) write(p []byte) {
	if r.err != nil {
		return
	}
	r.buf = append(r.buf, p...)
	for {
		body, n, err := NextFramed(r.buf, r.lim)
		if err != nil {
			r.err = err
			return
		}
		if n == 0 {
			return
		}
		var f Frame
		if err := DecodeBinary(body, &f, r.lim); err != nil {
			r.err = err
			return
		}
		r.frames = append(r.frames, f)
		r.buf = r.buf[n:]
	}
}

func TestStreamSplitAtEveryByte(t *testing.T) {
	lim := DefaultLimits()
	var want []Frame
	var stream []byte
	for _, f := range sampleFrames() {
		want = append(want, *f)
		stream = AppendFramed(stream, f)
	}
	check := func(t *testing.T, r *frameReader) {
		t.Helper()
		if r.err != nil {
			t.Fatalf("error: %v", r.err)
		}
		if len(r.buf) != 0 {
			t.Fatalf("%d bytes left over", len(r.buf))
		}
		if !reflect.DeepEqual(r.frames, want) {
			t.Fatalf("got %d frames %+v\nwant %d %+v", len(r.frames), r.frames, len(want), want)
		}
	}
	for i := 0; i <= len(stream); i++ {
		r := &frameReader{lim: lim}
		r.write(stream[:i])
		r.write(stream[i:])
		check(t, r)
	}
	for i := 0; i <= len(stream); i += 7 {
		for j := i; j <= len(stream); j += 5 {
			r := &frameReader{lim: lim}
			r.write(stream[:i])
			r.write(stream[i:j])
			r.write(stream[j:])
			check(t, r)
		}
	}
	r := &frameReader{lim: lim}
	for i := range stream {
		r.write(stream[i : i+1])
	}
	check(t, r)
}

// A bad length prefix in the middle of a stream stops it at that point,
// wherever the stream is split.
func TestStreamErrorAtEveryByte(t *testing.T) {
	lim := DefaultLimits()
	good := AppendFramed(nil, &Frame{Type: TypeAck, Stream: "u:a", Seq: 1})
	stream := append(append(append([]byte(nil), good...), 0, 0, 0, 0), good...)
	for i := 0; i <= len(stream); i++ {
		r := &frameReader{lim: lim}
		r.write(stream[:i])
		r.write(stream[i:])
		if len(r.frames) != 1 || !errors.Is(r.err, ErrMalformed) {
			t.Fatalf("split at %d: %d frames, err %v", i, len(r.frames), r.err)
		}
	}
}

func TestValidate(t *testing.T) {
	lim := smallLimits()
	tests := []struct {
		name string
		f    Frame
		want error
	}{
		{"ok ping", Frame{Type: TypePing}, nil},
		{"ok push", Frame{Type: TypePush, Stream: "b"}, nil},
		{"zero type", Frame{}, ErrUnknownType},
		{"type 13", Frame{Type: 13}, ErrUnknownType},
		{"payload", Frame{Type: TypeUplink, Payload: make([]byte, 17)}, ErrTooLarge},
		{"resume", Frame{Type: TypeConnect, Token: "t", Resume: make([]Position, 3)}, ErrTooLarge},
		{"connect", Frame{Type: TypeConnect}, ErrMissingField},
		{"subscribe", Frame{Type: TypeSubscribe}, ErrMissingField},
		{"unsubscribe", Frame{Type: TypeUnsubscribe}, ErrMissingField},
		{"ack seq", Frame{Type: TypeAck, Stream: "b"}, ErrMissingField},
		{"ack stream", Frame{Type: TypeAck, Seq: 1}, ErrMissingField},
		{"push", Frame{Type: TypePush}, ErrMissingField},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f.Validate(lim)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			checkSentinel(t, err, tt.want)
		})
	}
}

func TestTypeNames(t *testing.T) {
	seen := map[string]Type{}
	for ty := Type(0); ty < 20; ty++ {
		name := ty.String()
		valid := ty >= TypeConnect && ty <= TypeReply
		if ty.Valid() != valid {
			t.Errorf("%d.Valid() = %v", ty, ty.Valid())
		}
		got, ok := typeFromName(name)
		if ok != valid || (ok && got != ty) {
			t.Errorf("typeFromName(%q) = %d, %v", name, got, ok)
		}
		if !valid {
			if !strings.HasPrefix(name, "type(") {
				t.Errorf("invalid type %d is named %q", ty, name)
			}
			continue
		}
		if prev, dup := seen[name]; dup {
			t.Errorf("types %d and %d share the name %q", prev, ty, name)
		}
		seen[name] = ty
	}
	if _, ok := typeFromName("PUSH"); ok {
		t.Error("type names are case-sensitive")
	}
}
