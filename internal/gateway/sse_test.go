package gateway

import (
	"strings"
	"testing"

	"github.com/herald-push/herald/protocol"
)

func TestSSEPath(t *testing.T) {
	for ws, want := range map[string]string{"/ws": "/sse", "/push/ws": "/push/sse", "/a/b/": "/a/b/sse", "/": "/sse"} {
		if got := ssePath(ws); got != want {
			t.Errorf("ssePath(%q) = %q; want %q", ws, got, want)
		}
	}
}

func TestAppendSSEEvent(t *testing.T) {
	for _, tc := range []struct{ event, data, want string }{
		{"", `{"type":"ping"}`, "data: {\"type\":\"ping\"}\n\n"},
		{"session", `{"session":"x"}`, "event: session\ndata: {\"session\":\"x\"}\n\n"},
		// line breaks between JSON tokens: one data line each, any kind
		{"", "{\"a\":\n1,\r\n\"b\":\r2}", "data: {\"a\":\ndata: 1,\ndata: \"b\":\ndata: 2}\n\n"},
		{"", "x\n", "data: x\ndata: \n\n"},
	} {
		if got := string(appendSSEEvent(nil, tc.event, []byte(tc.data))); got != tc.want {
			t.Errorf("appendSSEEvent(%q, %q) = %q; want %q", tc.event, tc.data, got, tc.want)
		}
	}
}

func TestBuildSSE(t *testing.T) {
	g := &Gateway{cfg: Config{Limits: protocol.Limits{MaxFrame: 1024}}}
	var frames []*protocol.Encoded
	for range 30 {
		frames = append(frames, protocol.Encode(&protocol.Frame{Type: protocol.TypePong, Time: 1234567890123}))
	}
	out := string(g.buildSSE(frames))
	// one chunk: hex size, CRLF, events, CRLF
	head, rest, ok := strings.Cut(out, "\r\n")
	if !ok || !strings.HasSuffix(rest, "\r\n") {
		t.Fatalf("not a chunk: %q", out)
	}
	body := strings.TrimSuffix(rest, "\r\n")
	if len(body) != mustHex(t, head) {
		t.Fatalf("chunk size %q for %d bytes", head, len(body))
	}
	// each event within the frame limit, the frames in order and all there
	n := 0
	for _, ev := range strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n") {
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok || len(data) > 1024 {
			t.Fatalf("event %q", ev)
		}
		fs, err := protocol.DecodeJSONBatch([]byte(data), protocol.Limits{MaxFrame: 1024, MaxPayload: 512, MaxString: 512, MaxResume: 1})
		if err != nil {
			t.Fatalf("event %q: %v", ev, err)
		}
		n += len(fs)
	}
	if n != 30 {
		t.Fatalf("%d frames in the events; want 30", n)
	}
}

func mustHex(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			n = n*16 + int(c-'0')
		case c >= 'a' && c <= 'f':
			n = n*16 + int(c-'a') + 10
		default:
			t.Fatalf("bad hex %q", s)
		}
	}
	return n
}

func TestHeaderSafe(t *testing.T) {
	for v, want := range map[string]bool{"https://app.example.com": true, "null": true, "a\rb": false, "a\nb": false, "a\x00": false, "a\x7f": false} {
		if got := headerSafe(v); got != want {
			t.Errorf("headerSafe(%q) = %v; want %v", v, got, want)
		}
	}
}
