package server

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/protocol"
)

// withPrefix prefixes body with a length, which may be a lie.
func withPrefix(size uint32, body []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, size), body...)
}

func encode(f *protocol.Frame) []byte { return protocol.AppendFramed(nil, f) }

// badFrame is something a client must not send, and the ERROR code the
// server answers it with before it closes the connection.
type badFrame struct {
	name string
	msg  func(lim protocol.Limits) []byte
	code protocol.ErrorCode
	pong bool // a PING before the bad frame is answered first
}

// Binary cases, for TCP and binary WebSocket messages.
var badBinary = []badFrame{
	{"frame over max_frame_size", func(l protocol.Limits) []byte {
		return withPrefix(uint32(l.MaxFrame+1), make([]byte, 100))
	}, protocol.CodeTooLarge, false},
	{"payload over max_payload", func(l protocol.Limits) []byte {
		return encode(&protocol.Frame{Type: protocol.TypeAck, Stream: "u:x", Seq: 1, Payload: make([]byte, l.MaxPayload+1)})
	}, protocol.CodeTooLarge, false},
	{"string over its limit", func(l protocol.Limits) []byte {
		return encode(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: strings.Repeat("t", l.MaxString+1)})
	}, protocol.CodeTooLarge, false},
	{"field past the end", func(protocol.Limits) []byte {
		return withPrefix(6, []byte{protocol.EncodingVersion, byte(protocol.TypeSubscribe), 11<<1 | 1, 100, 'a', 'b'})
	}, protocol.CodeMalformed, false},
	{"bad encoding version", func(protocol.Limits) []byte {
		return withPrefix(2, []byte{0x7f, byte(protocol.TypePing)})
	}, protocol.CodeMalformed, false},
	{"unknown frame type", func(protocol.Limits) []byte {
		return withPrefix(2, []byte{protocol.EncodingVersion, 99})
	}, protocol.CodeMalformed, false},
	{"zero length", func(protocol.Limits) []byte {
		return withPrefix(0, nil)
	}, protocol.CodeMalformed, false},
	{"bad varint", func(protocol.Limits) []byte {
		return withPrefix(13, []byte{protocol.EncodingVersion, byte(protocol.TypePing), 16 << 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	}, protocol.CodeMalformed, false},
	{"invalid utf-8", func(protocol.Limits) []byte {
		return encode(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: "bad\xff"})
	}, protocol.CodeMalformed, false},
	{"missing field", func(protocol.Limits) []byte {
		return encode(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1})
	}, protocol.CodeMalformed, false},
	{"random bytes", func(protocol.Limits) []byte {
		return []byte{0, 0, 0, 9, 0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 0x42}
	}, protocol.CodeMalformed, false},
}

// Binary WebSocket messages only: on TCP a partial frame just waits for
// the rest.
var badWSBinary = []badFrame{
	{"message ends inside a frame", func(protocol.Limits) []byte {
		return withPrefix(100, []byte{protocol.EncodingVersion, byte(protocol.TypePing), 1, 2})
	}, protocol.CodeMalformed, false},
	{name: "good frame then truncated one", msg: func(protocol.Limits) []byte {
		return append(encode(&protocol.Frame{Type: protocol.TypePing, Time: 1}), 0, 0, 0, 50, 1)
	}, code: protocol.CodeMalformed, pong: true},
}

// JSON text messages.
var badText = []badFrame{
	{"garbled", func(protocol.Limits) []byte { return []byte("not json at all") }, protocol.CodeMalformed, false},
	{"truncated", func(protocol.Limits) []byte { return []byte(`{"type":"ping","time":1`) }, protocol.CodeMalformed, false},
	{"unknown type", func(protocol.Limits) []byte { return []byte(`{"type":"bogus"}`) }, protocol.CodeMalformed, false},
	{"wrong field type", func(protocol.Limits) []byte { return []byte(`{"type":"ping","time":"noon"}`) }, protocol.CodeMalformed, false},
	{"bad b64", func(protocol.Limits) []byte { return []byte(`{"type":"ack","stream":"u:x","seq":1,"b64":"!!"}`) }, protocol.CodeMalformed, false},
	{"missing field", func(protocol.Limits) []byte { return []byte(`{"type":"subscribe","id":1}`) }, protocol.CodeMalformed, false},
	// A JSON batch is decoded whole before any of its frames is handled.
	{"bad frame in a batch", func(protocol.Limits) []byte { return []byte(`[{"type":"ping","time":1},{"type":"bogus"}]`) }, protocol.CodeMalformed, false},
	{"message over max_frame_size", func(l protocol.Limits) []byte {
		return []byte(`{"type":"ping","reason":"` + strings.Repeat("x", l.MaxFrame) + `"}`)
	}, protocol.CodeTooLarge, false},
	{"payload over max_payload", func(l protocol.Limits) []byte {
		return []byte(`{"type":"ack","stream":"u:x","seq":1,"b64":"` + base64.StdEncoding.EncodeToString(make([]byte, l.MaxPayload+1)) + `"}`)
	}, protocol.CodeTooLarge, false},
	{"string over its limit", func(l protocol.Limits) []byte {
		return []byte(`{"type":"subscribe","id":1,"topic":"` + strings.Repeat("t", l.MaxString+1) + `"}`)
	}, protocol.CodeTooLarge, false},
}

// TestBadFrames sends oversized, truncated and garbled frames over every
// transport, before and after CONNECT. Each gets an ERROR and DISCONNECT
// 3008 on its own connection only, while another client keeps receiving.
func TestBadFrames(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) { c.MaxFrameSize, c.MaxPayload = 16<<10, 8<<10 })
	lim := protocol.DefaultLimits()
	lim.MaxFrame, lim.MaxPayload = h.cfg.MaxFrameSize, h.cfg.MaxPayload
	healthy := h.connect(wsBinary, "healthy", h.token(appA, "healthy"), "d")

	type suite struct {
		tr    transport
		text  bool
		cases []badFrame
	}
	suites := []suite{
		{rawTCP, false, badBinary},
		{wsBinary, false, append(append([]badFrame(nil), badBinary...), badWSBinary...)},
		{wsJSON, true, badText},
	}
	n := 0
	for _, s := range suites {
		for _, tc := range s.cases {
			for _, authenticated := range []bool{true, false} {
				if !authenticated && len(tc.msg(lim)) > h.cfg.MaxConnectSize {
					// Refused from its header, before CONNECT: the server
					// closes while the rest is still being written, so
					// the write may fail. TestPreAuthLimits covers these
					// over raw sockets.
					continue
				}
				n++
				name := fmt.Sprintf("%s/%s/auth=%v", s.tr.name, tc.name, authenticated)
				t.Run(name, func(t *testing.T) {
					h := h.withT(t)
					var c *tconn
					if authenticated {
						c = h.connect(s.tr, "bad", h.token(appA, "bad"), fmt.Sprint("dev", n))
					} else {
						c = h.dial(s.tr, "bad")
					}
					if err := c.WriteRaw(tc.msg(lim), s.text); err != nil {
						t.Fatalf("write: %v", err)
					}
					if tc.pong {
						c.expect(protocol.TypePong)
					}
					c.expectError(tc.code, 0)
					c.expectDisconnect(protocol.DisconnectProtocolError)

					msg := fmt.Sprintf(`"after %d"`, n)
					h.apiOK("POST", "/v1/apps/app-a/users/healthy/messages", keyA, `{"data":`+msg+`}`, nil)
					healthy.expectPush("u:healthy", []byte(msg))
				})
			}
		}
	}
	h.waitDisconnects(protocol.DisconnectProtocolError, uint64(n))
	st := h.srv.GatewayStats()
	if st.DecodeErrors != uint64(n) || st.Disconnects[protocol.DisconnectProtocolError] != uint64(n) {
		t.Fatalf("decode errors %d, protocol-error disconnects %d; want %d of each",
			st.DecodeErrors, st.Disconnects[protocol.DisconnectProtocolError], n)
	}
	healthy.ping(7)
}

// rawFrames reads length-prefixed frames from a plain net.Conn.
type rawFrames struct {
	t  testing.TB
	nc net.Conn
}

func (r rawFrames) read() *protocol.Frame {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(waitTime))
	var pre [4]byte
	if _, err := io.ReadFull(r.nc, pre[:]); err != nil {
		r.t.Fatalf("read: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(pre[:]))
	if _, err := io.ReadFull(r.nc, body); err != nil {
		r.t.Fatalf("read: %v", err)
	}
	f := new(protocol.Frame)
	if err := protocol.DecodeBinary(body, f, protocol.DefaultLimits()); err != nil {
		r.t.Fatalf("decode: %v", err)
	}
	return f
}

func (r rawFrames) write(f *protocol.Frame) {
	r.t.Helper()
	if _, err := r.nc.Write(protocol.AppendFramed(nil, f)); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// TestSlowConsumer subscribes a TCP client that never reads and a healthy
// one to a topic and publishes until the server gives up on the slow one.
// The slow one is disconnected as a slow consumer; the healthy one gets
// every message, in order.
func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	h := startServer(t, func(c *config.Config) {
		// A small outbound limit: two of the gateway's largest writes
		// (64 KiB batches), so that a healthy reader is never cut off.
		c.MaxFrameSize, c.MaxPayload, c.OutboundLimit = 64<<10, 32<<10, 128<<10
	})
	const topic = "feed"

	// The slow consumer: a raw TCP socket with a small receive buffer that
	// stops reading after subscribing.
	nc, err := net.DialTimeout("tcp", h.srv.TCPAddr(), waitTime)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.(*net.TCPConn).SetReadBuffer(4 << 10); err != nil {
		t.Fatal(err)
	}
	slow := rawFrames{t: t, nc: nc}
	slow.write(&protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: h.token(appA, "slow", topic), Device: "d"})
	if f := slow.read(); f.Type != protocol.TypeConnected {
		t.Fatalf("slow: got %s; want CONNECTED", f.Type)
	}
	slow.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: 1, Topic: topic})
	if f := slow.read(); f.Type != protocol.TypeReply {
		t.Fatalf("slow: got %s; want REPLY", f.Type)
	}

	// The healthy consumer reads everything on its own goroutine.
	healthy := h.connect(wsBinary, "healthy", h.token(appA, "healthy", topic), "d")
	healthy.subscribe(1, topic)
	frames := make(chan *protocol.Frame, 64)
	readErr := make(chan error, 1)
	go func() {
		defer close(frames)
		for {
			f, err := healthy.ReadFrame()
			if err != nil {
				readErr <- err
				return
			}
			frames <- f
		}
	}()
	received := 0
	receive := func() {
		t.Helper()
		select {
		case f, ok := <-frames:
			if !ok {
				t.Fatalf("healthy consumer lost its connection after %d messages: %v", received, <-readErr)
			}
			var m struct{ Seq int }
			if f.Type != protocol.TypePush || f.Stream != "t:"+topic || json.Unmarshal(f.Payload, &m) != nil {
				t.Fatalf("healthy consumer got %s %s", f.Type, f.Stream)
			}
			if m.Seq != received+1 {
				t.Fatalf("healthy consumer got message %d after %d", m.Seq, received)
			}
			received++
		case <-time.After(waitTime):
			t.Fatalf("healthy consumer got nothing for %v after %d messages", waitTime, received)
		}
	}

	// Publish ~30 KiB messages, keeping the healthy consumer at most a few
	// messages behind, until the slow one is cut off; then some more.
	pad := strings.Repeat("x", 30<<10)
	const maxMessages, lag, after = 3000, 8, 20
	sent, cutAt := 0, 0
	for cutAt == 0 || sent < cutAt+after {
		if sent == maxMessages {
			t.Fatalf("the slow consumer is still connected after %d messages (%d MiB)", sent, sent*len(pad)>>20)
		}
		sent++
		var r pushResult
		h.apiOK("POST", "/v1/apps/app-a/topics/"+topic+"/messages", keyA, map[string]any{"data": map[string]any{"seq": sent, "pad": pad}}, &r)
		// The gateway counts the disconnect before the session leaves the
		// topic, so a message that found one subscriber finds it counted.
		if cutAt == 0 && h.srv.GatewayStats().Disconnects[protocol.DisconnectSlowConsumer] > 0 {
			cutAt = sent
			t.Logf("slow consumer cut off after %d messages (%d MiB)", sent, sent*len(pad)>>20)
		}
		if cutAt == 0 && r.Subscribers != 2 {
			t.Fatalf("message %d: %d subscribers; want 2", sent, r.Subscribers)
		}
		for sent-received > lag {
			receive()
		}
	}
	for received < sent {
		receive()
	}
	if r := h.publish(appA, topic, map[string]any{"seq": sent + 1}); r.Subscribers != 1 {
		t.Fatalf("after the cut: %d subscribers; want 1", r.Subscribers)
	}
	receive()

	// The healthy consumer is still connected and answers.
	healthy.write(&protocol.Frame{Type: protocol.TypePing, Time: 77})
	select {
	case f := <-frames:
		if f == nil || f.Type != protocol.TypePong || f.Time != 77 {
			t.Fatalf("healthy consumer: got %v; want PONG 77", f)
		}
	case <-time.After(waitTime):
		t.Fatal("no PONG")
	}
	st := h.srv.GatewayStats()
	if st.Disconnects[protocol.DisconnectSlowConsumer] != 1 || st.Open != 1 {
		t.Fatalf("slow-consumer disconnects %d, open %d; want 1 and 1", st.Disconnects[protocol.DisconnectSlowConsumer], st.Open)
	}
	if p := h.presence(appA, "slow"); p.Online {
		t.Fatalf("the slow consumer is still present: %+v", p)
	}

	// The server closed the slow consumer's socket. Draining it need not
	// reach EOF (with a receive buffer shrunk after the handshake, Linux may
	// never send the rest of what it had queued), but a socket the server
	// has closed answers anything sent to it with a reset, so reading then
	// ends in an error; were the socket still open, the server would
	// answer the PING and the read would time out.
	_ = nc.SetWriteDeadline(time.Now().Add(waitTime))
	_, _ = nc.Write(protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypePing, Time: 1}))
	_ = nc.SetReadDeadline(time.Now().Add(waitTime))
	drained, err := io.Copy(io.Discard, nc)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the slow consumer's socket is still open (read %d bytes, then nothing)", drained)
	}
	t.Logf("slow consumer: read %d more bytes, then %v", drained, err)
	_ = healthy.Close()
	for range frames {
	}
}
