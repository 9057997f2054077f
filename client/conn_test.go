package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/herald-push/herald/protocol"
)

// transport is one way of reaching the fake server.
type transport struct {
	name string
	enc  Encoding
	ws   bool
}

var transports = []transport{
	{"tcp", Binary, false},
	{"ws-binary", Binary, true},
	{"ws-json", JSON, true},
}

func (tr transport) server(t testing.TB) *fakeServer {
	if tr.ws {
		return newWSServer(t)
	}
	return newTCPServer(t)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func dialTest(t testing.TB, url string, opts DialOptions) *Conn {
	t.Helper()
	c, err := DialConn(testCtx(t), url, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// readFrame reads one frame, failing the test after waitTimeout.
func readFrame(t testing.TB, c *Conn) *protocol.Frame {
	t.Helper()
	timer := time.AfterFunc(waitTimeout, func() { c.abort() })
	defer timer.Stop()
	f, err := c.ReadFrame()
	if err != nil {
		t.Fatalf("ReadFrame: %v", err)
	}
	return f
}

func TestConnHandshakeAndBatches(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			c := dialTest(t, srv.url, DialOptions{Encoding: tr.enc})
			resume := []protocol.Position{{Stream: "u:alice", Epoch: "e1", Seq: 41}}

			type result struct {
				f   *protocol.Frame
				err error
			}
			res := make(chan result, 1)
			ctx := testCtx(t)
			go func() {
				f, err := c.Handshake(ctx, "tok", "phone", resume)
				res <- result{f, err}
			}()
			sc := srv.accept(t)
			connect := sc.handshake(t, "sess-1", 25*time.Second)
			want := &protocol.Frame{Type: protocol.TypeConnect, Version: protocol.Version, Token: "tok",
				Device: "phone", Client: "herald-go/" + Version, Resume: resume}
			if !reflect.DeepEqual(connect, want) {
				t.Fatalf("CONNECT = %+v, want %+v", *connect, *want)
			}
			if sc.json.Load() != (tr.enc == JSON) {
				t.Fatalf("client sent text messages: %v, want %v", sc.json.Load(), tr.enc == JSON)
			}
			r := <-res
			if r.err != nil {
				t.Fatal(r.err)
			}
			if r.f.Session != "sess-1" || r.f.Node != "node-1" || r.f.Heartbeat != 25*time.Second {
				t.Fatalf("CONNECTED = %+v", *r.f)
			}

			// Several frames in one message / one write (a JSON array on
			// ws-json) come out one at a time.
			batch := []*protocol.Frame{
				pushFrame("u:alice", "e1", 42, `{"n":1}`),
				pushFrame("u:alice", "e1", 43, "\x00binary\xff"),
				{Type: protocol.TypePing, Time: 7},
			}
			sc.send(t, batch...)
			sc.send(t, pushFrame("t:news", "e2", 1, `"single"`))
			for _, w := range append(batch, pushFrame("t:news", "e2", 1, `"single"`)) {
				if got := readFrame(t, c); !reflect.DeepEqual(got, w) {
					t.Fatalf("read %+v, want %+v", *got, *w)
				}
			}

			// WriteFrames sends a batch the server splits again.
			out := []*protocol.Frame{
				{Type: protocol.TypeAck, Stream: "u:alice", Seq: 43},
				{Type: protocol.TypeSubscribe, ID: 1, Topic: "news"},
				{Type: protocol.TypePong, Time: 7},
			}
			if err := c.WriteFrames(out...); err != nil {
				t.Fatal(err)
			}
			for _, w := range out {
				if got := sc.next(t); !reflect.DeepEqual(got, w) {
					t.Fatalf("server read %+v, want %+v", *got, *w)
				}
			}
		})
	}
}

func TestConnHandshakeRefused(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			c := dialTest(t, srv.url, DialOptions{Encoding: tr.enc})
			res := make(chan error, 1)
			ctx := testCtx(t)
			go func() {
				_, err := c.Handshake(ctx, "bad", "", nil)
				res <- err
			}()
			srv.accept(t).refuse(t, protocol.CodeBadToken, protocol.DisconnectAuthFailed)
			err := <-res
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != protocol.CodeBadToken {
				t.Fatalf("err = %v, want *protocol.Error %d", err, protocol.CodeBadToken)
			}
			var d protocol.Disconnect
			if !errors.As(err, &d) || d.Code != protocol.DisconnectAuthFailed || d.Reconnect {
				t.Fatalf("err = %v, want protocol.Disconnect %d", err, protocol.DisconnectAuthFailed)
			}
		})
	}
}

func TestConnHandshakeContext(t *testing.T) {
	srv := newTCPServer(t)
	c := dialTest(t, srv.url, DialOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		_, err := c.Handshake(ctx, "tok", "", nil)
		res <- err
	}()
	sc := srv.accept(t)
	sc.expect(t, protocol.TypeConnect) // and never answer
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Handshake did not return after cancel")
	}
	sc.ended(t) // the connection was closed
}

func TestConnWriteRaw(t *testing.T) {
	t.Run("tcp", func(t *testing.T) {
		srv := newTCPServer(t)
		c := dialTest(t, srv.url, DialOptions{})
		// A well-framed body with a bad encoding version byte.
		if err := c.WriteRaw([]byte{0, 0, 0, 3, 9, 1, 0}, false); err != nil {
			t.Fatal(err)
		}
		if err := srv.accept(t).ended(t); !errors.Is(err, protocol.ErrBadVersion) {
			t.Fatalf("server read error = %v, want ErrBadVersion", err)
		}
	})
	t.Run("ws-text", func(t *testing.T) {
		srv := newWSServer(t)
		c := dialTest(t, srv.url, DialOptions{})
		if err := c.WriteRaw([]byte(`{"type":"nonsense"`), true); err != nil {
			t.Fatal(err)
		}
		if err := srv.accept(t).ended(t); !errors.Is(err, protocol.ErrMalformed) {
			t.Fatalf("server read error = %v, want ErrMalformed", err)
		}
	})
}

func TestConnReadMalformed(t *testing.T) {
	for _, tr := range transports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			c := dialTest(t, srv.url, DialOptions{})
			sc := srv.accept(t)
			good := protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypePong, Time: 1})
			bad := []byte{0, 0, 0, 2, protocol.EncodingVersion, 99} // unknown frame type
			if err := sc.sendRaw(append(good, bad...), false); err != nil {
				t.Fatal(err)
			}
			if f := readFrame(t, c); f.Type != protocol.TypePong {
				t.Fatalf("first frame = %+v", *f)
			}
			_, err := c.ReadFrame()
			if !errors.Is(err, protocol.ErrUnknownType) {
				t.Fatalf("err = %v, want ErrUnknownType", err)
			}
			if _, err2 := c.ReadFrame(); err2 != err {
				t.Fatalf("second error = %v, want the same %v", err2, err)
			}
		})
	}
	t.Run("ws-truncated", func(t *testing.T) {
		srv := newWSServer(t)
		c := dialTest(t, srv.url, DialOptions{})
		sc := srv.accept(t)
		msg := protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypePong, Time: 1})
		if err := sc.sendRaw(msg[:len(msg)-1], false); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadFrame(); !errors.Is(err, protocol.ErrMalformed) {
			t.Fatalf("err = %v, want ErrMalformed", err)
		}
	})
}

// TestConnTCPSplitWrites sends frames cut at awkward places, and one larger
// than the initial read buffer.
func TestConnTCPSplitWrites(t *testing.T) {
	srv := newTCPServer(t)
	c := dialTest(t, srv.url, DialOptions{})
	sc := srv.accept(t)
	big := pushFrame("u:bob", "e", 2, strings.Repeat("x", 3*initialReadBuffer))
	frames := []*protocol.Frame{pushFrame("u:bob", "e", 1, "a"), big, {Type: protocol.TypePing, Time: 3}}
	var stream []byte
	for _, f := range frames {
		stream = protocol.AppendFramed(stream, f)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, cut := range [][2]int{{0, 2}, {2, 7}, {7, 40}, {40, len(stream) - 3}, {len(stream) - 3, len(stream)}} {
			if err := sc.sendRaw(stream[cut[0]:cut[1]], false); err != nil {
				return
			}
		}
	}()
	for _, w := range frames {
		if got := readFrame(t, c); !reflect.DeepEqual(got, w) {
			t.Fatalf("read %s seq %d (%d bytes), want %s seq %d", got.Type, got.Seq, len(got.Payload), w.Type, w.Seq)
		}
	}
	<-done
}

func TestConnCloseUnblocksRead(t *testing.T) {
	for _, tr := range transports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			c := dialTest(t, srv.url, DialOptions{})
			sc := srv.accept(t)
			res := make(chan error, 1)
			go func() {
				_, err := c.ReadFrame()
				res <- err
			}()
			if err := c.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			select {
			case err := <-res:
				if !errors.Is(err, net.ErrClosed) {
					t.Fatalf("ReadFrame after Close: %v, want net.ErrClosed", err)
				}
			case <-time.After(waitTimeout):
				t.Fatal("ReadFrame still blocked after Close")
			}
			sc.ended(t)
			if err := c.WriteFrame(&protocol.Frame{Type: protocol.TypePing}); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("WriteFrame after Close: %v, want net.ErrClosed", err)
			}
		})
	}
}

func TestConnLocalAddr(t *testing.T) {
	for _, tr := range transports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			c := dialTest(t, srv.url, DialOptions{LocalAddr: "127.0.0.1"})
			srv.accept(t)
			a, ok := c.LocalAddr().(*net.TCPAddr)
			if !ok || !a.IP.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Fatalf("LocalAddr = %v", c.LocalAddr())
			}
			if c.RemoteAddr().String() != srv.addr {
				t.Fatalf("RemoteAddr = %v, want %s", c.RemoteAddr(), srv.addr)
			}
		})
	}
}

func TestDialConnErrors(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		url  string
		opts DialOptions
		want string
	}{
		{"http2://x", DialOptions{}, "unsupported scheme"},
		{"tcp://127.0.0.1:1", DialOptions{Encoding: JSON}, "JSON encoding needs WebSocket"},
		{"tcp://127.0.0.1:1", DialOptions{LocalAddr: "localhost"}, "bad local address"},
		{"tcp://", DialOptions{}, "missing host"},
	} {
		if _, err := DialConn(ctx, tc.url, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DialConn(%q) = %v, want %q", tc.url, err, tc.want)
		}
	}
}

func TestWriteRawBinaryWS(t *testing.T) {
	srv := newWSServer(t)
	c := dialTest(t, srv.url, DialOptions{})
	sc := srv.accept(t)
	f := &protocol.Frame{Type: protocol.TypeAck, Stream: "b", Seq: 9}
	if err := c.WriteRaw(protocol.AppendFramed(nil, f), false); err != nil {
		t.Fatal(err)
	}
	if got := sc.next(t); !reflect.DeepEqual(got, f) {
		t.Fatalf("server read %+v", *got)
	}
}

// TestConnHandshakeFitsMaxConnect gives Handshake more resume positions
// than fit in a CONNECT a server reads before authentication
// (Limits.MaxConnect): it sends the first ones, as many as fit.
func TestConnHandshakeFitsMaxConnect(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			c := dialTest(t, srv.url, DialOptions{Encoding: tr.enc})
			var resume []protocol.Position
			for i := range 256 {
				resume = append(resume, protocol.Position{Stream: fmt.Sprintf("t:topic-with-a-longish-name-%03d", i),
					Epoch: "0123456789abcdef0123456789abcdef", Seq: 1000000 + uint64(i)})
			}
			ctx := testCtx(t)
			go func() { _, _ = c.Handshake(ctx, "tok", "phone", resume) }()
			sc := srv.accept(t)
			connect := sc.handshake(t, "sess-1", 25*time.Second)
			size := len(protocol.AppendBinary(nil, connect))
			if tr.enc == JSON {
				size = len(protocol.AppendJSON(nil, connect))
			}
			n := len(connect.Resume)
			if size > protocol.DefaultMaxConnect || n == 0 || !reflect.DeepEqual(connect.Resume, resume[:n]) {
				t.Fatalf("CONNECT of %d bytes with %d positions; want at most %d bytes, with the first positions given", size, n, protocol.DefaultMaxConnect)
			}
			connect.Resume = append(connect.Resume, resume[n])
			if tr.enc == JSON {
				size = len(protocol.AppendJSON(nil, connect))
			} else {
				size = len(protocol.AppendBinary(nil, connect))
			}
			if size <= protocol.DefaultMaxConnect {
				t.Fatalf("%d positions sent; one more would have fitted", n)
			}
		})
	}
}
