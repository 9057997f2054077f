package gateway

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// wsFrame builds a client frame header (masked unless unmasked) and payload.
func wsFrame(fin bool, op byte, payload []byte, unmasked bool) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	mask := byte(0x80)
	if unmasked {
		mask = 0
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, mask|byte(n))
	case n <= 0xffff:
		out = append(out, mask|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, mask|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if !unmasked {
		out = append(out, 1, 2, 3, 4)
	}
	return append(out, payload...)
}

// wsHeader64 is the header of a masked frame that announces n bytes with a
// 64-bit length, without its payload.
func wsHeader64(op byte, n uint64) []byte {
	out := append([]byte{0x80 | op, 0x80 | 127}, binary.BigEndian.AppendUint64(nil, n)...)
	return append(out, 1, 2, 3, 4)
}

// guardRun is what a scan of a stream, fed in pieces, ends with.
type guardRun struct {
	verdict  wsVerdict // wsOK, or the refusal
	at       int       // where the refused frame starts in the stream; the bytes passed on
	controls int       // control frames seen
	messages int       // data messages ended
}

// runGuard feeds the pieces of a stream to a scan as wsReader.Parse does.
// allow is how many control frames the rate allows.
func runGuard(pieces [][]byte, lim wsLimits, allow int) guardRun {
	var s wsScan
	var r guardRun
	control := func() bool {
		r.controls++
		return r.controls <= allow
	}
	for _, p := range pieces {
		for len(p) > 0 {
			n, v := s.scan(p, lim, control)
			r.at += n
			p = p[n:]
			switch v {
			case wsOK:
			case wsMessageEnd:
				r.messages++
			default:
				r.verdict = v
				return r
			}
		}
	}
	return r
}

func TestWSScan(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 300)
	pre := wsLimits{text: 100, binary: 100, stopAtMessageEnd: true}
	post := wsLimits{text: 1000, binary: 1000}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tests := []struct {
		name   string
		stream []byte
		lim    wsLimits
		allow  int
		want   guardRun
	}{
		{"one message", wsFrame(true, 2, []byte("hello"), false), pre, 10, guardRun{at: 11, messages: 1}},
		{"unmasked", cat(wsFrame(true, 2, []byte("ok"), false), wsFrame(true, 2, []byte("no"), true)), pre, 10,
			guardRun{verdict: wsUnmasked, at: 8, messages: 1}},
		{"unmasked ping", wsFrame(true, 9, nil, true), post, 10, guardRun{verdict: wsUnmasked}},
		{"over the limit before connect", wsFrame(true, 1, big[:101], false), pre, 10, guardRun{verdict: wsTooLarge}},
		{"at the limit before connect", wsFrame(true, 1, big[:100], false), pre, 10, guardRun{at: 106, messages: 1}},
		{"64-bit length", wsHeader64(2, 64<<10), pre, 10, guardRun{verdict: wsTooLarge}},
		{"length of 2^32", wsHeader64(2, 1<<32), post, 10, guardRun{verdict: wsTooLarge}},
		{"fragments add up", cat(wsFrame(false, 2, big[:60], false), wsFrame(true, 0, big[:60], false)), pre, 10,
			guardRun{verdict: wsTooLarge, at: 66}},
		{"fragments within", cat(wsFrame(false, 1, big[:50], false), wsFrame(true, 9, nil, false), wsFrame(true, 0, big[:50], false)), pre, 10,
			guardRun{at: 56 + 6 + 56, controls: 1, messages: 1}},
		{"control frame too long", wsFrame(true, 9, big[:126], false), post, 10, guardRun{verdict: wsBadControl}},
		{"pings over the rate", cat(wsFrame(true, 9, nil, false), wsFrame(true, 9, nil, false), wsFrame(true, 10, nil, false)), post, 2,
			guardRun{verdict: wsRateLimited, at: 12, controls: 3}},
		{"after connect", cat(wsFrame(true, 2, big[:300], false), wsFrame(true, 1, big[:200], false)), post, 10, guardRun{at: 308 + 208}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for split := 0; split <= len(tt.stream); split++ {
				// Whole, in two pieces, and a byte at a time.
				runs := [][][]byte{{tt.stream}, {tt.stream[:split], tt.stream[split:]}}
				if split == 0 {
					var bytewise [][]byte
					for i := range tt.stream {
						bytewise = append(bytewise, tt.stream[i:i+1])
					}
					runs = append(runs, bytewise)
				}
				for i, pieces := range runs {
					got := runGuard(pieces, tt.lim, tt.allow)
					if i == 0 && got != tt.want || !sameRun(tt.want, got) {
						t.Fatalf("split at %d (%d pieces): got %+v; want %+v", split, len(pieces), got, tt.want)
					}
				}
			}
		})
	}
}

// sameRun reports whether split, a run of the stream of whole in pieces,
// came to the same end. Of a refused frame, split may have passed on the
// part of its header that came in earlier pieces, never all of it.
func sameRun(whole, split guardRun) bool {
	if whole.verdict == wsOK {
		return split == whole
	}
	return split.verdict == whole.verdict && split.controls == whole.controls && split.messages == whole.messages &&
		split.at >= whole.at && split.at < whole.at+wsMaxHeader
}

// refUnmasked returns where the first frame without the mask bit starts in
// stream, parsing it whole and plainly; -1 if none, or if the stream goes
// wrong before (a length over 2^32, which the guard refuses anyway).
func refUnmasked(stream []byte) int {
	for i := 0; i+2 <= len(stream); {
		if stream[i+1]&0x80 == 0 {
			return i
		}
		n, h := uint64(stream[i+1]&0x7f), 2
		switch n {
		case 126:
			if i+4 > len(stream) {
				return -1
			}
			n, h = uint64(binary.BigEndian.Uint16(stream[i+2:])), 4
		case 127:
			if i+10 > len(stream) {
				return -1
			}
			n, h = binary.BigEndian.Uint64(stream[i+2:]), 10
			if n >= 1<<32 {
				return -1
			}
		}
		i += h + 4 + int(n)
	}
	return -1
}

// FuzzWSGuard feeds arbitrary bytes, split at arbitrary points, to the
// frame guard: it never panics, never passes on the start of an unmasked
// frame, and its verdict does not depend on how the bytes were split.
func FuzzWSGuard(f *testing.F) {
	f.Add(wsFrame(true, 2, []byte("hello"), false), []byte{3, 1}, uint16(100), true)
	f.Add(append(wsFrame(true, 9, nil, false), wsFrame(true, 2, []byte("x"), true)...), []byte{1}, uint16(100), false)
	f.Add(wsHeader64(2, 64<<10), []byte{2, 2, 2}, uint16(8192), true)
	f.Add(append(wsFrame(false, 1, []byte("ab"), false), wsFrame(true, 0, []byte("cd"), false)...), []byte{5}, uint16(3), true)
	f.Fuzz(func(t *testing.T, stream, cuts []byte, limit uint16, stop bool) {
		lim := wsLimits{text: uint32(limit), binary: uint32(limit) * 2, stopAtMessageEnd: stop}
		const allow = 8
		whole := runGuard([][]byte{stream}, lim, allow)
		var pieces [][]byte
		rest := stream
		for _, c := range cuts {
			k := min(int(c), len(rest))
			pieces = append(pieces, rest[:k])
			rest = rest[k:]
		}
		pieces = append(pieces, rest)
		split := runGuard(pieces, lim, allow)
		if !sameRun(whole, split) {
			t.Fatalf("whole: %+v; in %d pieces: %+v", whole, len(pieces), split)
		}
		// Of an unmasked frame, at most its first byte gets through.
		if u := refUnmasked(stream); u >= 0 && (whole.verdict == wsOK || whole.at > u || split.at > u+1) {
			t.Fatalf("unmasked frame at %d passed: whole %+v, split %+v", u, whole, split)
		}
		if whole.verdict == wsOK && whole.at != len(stream) {
			t.Fatalf("scan accepted %d of %d bytes", whole.at, len(stream))
		}
	})
}
