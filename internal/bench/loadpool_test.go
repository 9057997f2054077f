package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/ws"
	"github.com/lesismal/nbio"
	"go.uber.org/goleak"

	"github.com/herald-push/herald/protocol"
)

// lpTimeout bounds every wait of these tests; nothing waits for it to pass.
const lpTimeout = 20 * time.Second

// lpFakeConn is the server side of one test connection.
type lpFakeConn struct {
	write   func([]byte) error // TCP: bytes of the stream; WebSocket: one binary message
	closeFn func()
	ws      *websocket.Conn // WebSocket only
	remote  net.Addr

	connect *protocol.Frame      // the CONNECT received
	got     chan *protocol.Frame // frames after the handshake: ACK, PONG, DISCONNECT...
	done    chan struct{}        // closed when the socket is gone
	err     error                // why it went, set before done is closed
}

func newLPFakeConn() *lpFakeConn {
	return &lpFakeConn{got: make(chan *protocol.Frame, 16), done: make(chan struct{})}
}

func (fc *lpFakeConn) send(t *testing.T, fs ...*protocol.Frame) {
	t.Helper()
	var b []byte
	for _, f := range fs {
		b = protocol.AppendFramed(b, f)
	}
	if err := fc.write(b); err != nil {
		t.Fatalf("server write: %v", err)
	}
}

// lpFakeServer answers CONNECT and SUBSCRIBE like a Herald server and lets
// the test drive the rest. Tokens: "bad" is refused (ERROR 2004, then
// DISCONNECT 3007), "bye" gets DISCONNECT 3001 alone, "hang" gets no answer;
// any other is accepted. Topic "forbidden" is refused with ERROR 1001.
type lpFakeServer struct {
	url      string
	ready    chan *lpFakeConn // accepted connections, after CONNECTED
	hung     chan *lpFakeConn // connections that sent token "hang"
	sessions atomic.Int64
	stop     func()
}

func newLPFakeServerState() *lpFakeServer {
	return &lpFakeServer{ready: make(chan *lpFakeConn, 4096), hung: make(chan *lpFakeConn, 16)}
}

// frame handles one frame from a client. It never blocks.
func (s *lpFakeServer) frame(fc *lpFakeConn, f *protocol.Frame) {
	var out []byte
	switch f.Type {
	case protocol.TypeConnect:
		fc.connect = f
		switch f.Token {
		case "bad":
			e := &protocol.Error{Code: protocol.CodeBadToken, Text: "bad token"}
			out = protocol.AppendFramed(out, e.Frame())
			out = protocol.AppendFramed(out, protocol.NewDisconnect(protocol.DisconnectAuthFailed).Frame())
			_ = fc.write(out)
			fc.closeFn()
			return
		case "bye":
			_ = fc.write(protocol.AppendFramed(nil, protocol.NewDisconnect(protocol.DisconnectShutdown).Frame()))
			fc.closeFn()
			return
		case "hang":
			s.hung <- fc
			return
		}
		n := s.sessions.Add(1)
		out = protocol.AppendFramed(out, &protocol.Frame{
			Type: protocol.TypeConnected, Session: fmt.Sprintf("s%d", n), Node: "fake", Heartbeat: 30 * time.Second,
		})
		_ = fc.write(out)
		s.ready <- fc
	case protocol.TypeSubscribe:
		if f.Topic == "forbidden" {
			e := &protocol.Error{ID: f.ID, Code: protocol.CodeForbidden}
			_ = fc.write(protocol.AppendFramed(nil, e.Frame()))
			return
		}
		if f.Topic == "recover" { // a topic with a position: replays one message
			stream := "t:" + f.Topic
			if f.Epoch == "" {
				_ = fc.write(protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypeReply, ID: f.ID, Stream: stream, Epoch: "e1", Seq: 7}))
				return
			}
			out = protocol.AppendFramed(out, &protocol.Frame{Type: protocol.TypePush, Stream: stream, Epoch: f.Epoch, Seq: f.Seq + 1, Payload: []byte("missed")})
			out = protocol.AppendFramed(out, &protocol.Frame{Type: protocol.TypeReply, ID: f.ID, Stream: stream, Epoch: f.Epoch, Seq: f.Seq + 1, Recovered: true})
			_ = fc.write(out)
			return
		}
		_ = fc.write(protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypeReply, ID: f.ID}))
	default:
		select {
		case fc.got <- f:
		default:
		}
	}
}

// frames decodes the length-prefixed frames at the start of buf and returns
// how many bytes they took.
func (s *lpFakeServer) frames(fc *lpFakeConn, buf []byte) (int, error) {
	used := 0
	for {
		body, n, err := protocol.NextFramed(buf[used:], protocol.DefaultLimits())
		if err != nil || n == 0 {
			return used, err
		}
		f := new(protocol.Frame)
		if err := protocol.DecodeBinary(body, f, protocol.DefaultLimits()); err != nil {
			return used, err
		}
		used += n
		s.frame(fc, f)
	}
}

// newLPFakeTCP starts a fake server for the raw TCP transport. It runs on an
// nbio event loop of its own, so that its idle connections hold no
// goroutines either.
func newLPFakeTCP(t *testing.T) *lpFakeServer {
	t.Helper()
	s := newLPFakeServerState()
	type session struct {
		fc      *lpFakeConn
		partial []byte
	}
	e := nbio.NewEngine(nbio.Config{Name: "fake-herald", Network: "tcp", Addrs: []string{"127.0.0.1:0"}, NPoller: 1})
	e.OnOpen(func(nc *nbio.Conn) {
		fc := newLPFakeConn()
		fc.remote = nc.RemoteAddr()
		fc.write = func(b []byte) error { _, err := nc.Write(b); return err }
		fc.closeFn = func() { _ = nc.Close() }
		nc.SetSession(&session{fc: fc})
		nc.Lock() // hand the session over to the poller (race detector)
		nc.Unlock()
	})
	e.OnData(func(nc *nbio.Conn, data []byte) {
		ss := nc.Session().(*session)
		ss.partial = append(ss.partial, data...)
		n, err := s.frames(ss.fc, ss.partial)
		if err != nil {
			_ = nc.CloseWithError(err)
			return
		}
		ss.partial = append(ss.partial[:0], ss.partial[n:]...)
	})
	e.OnClose(func(nc *nbio.Conn, err error) {
		if ss, ok := nc.Session().(*session); ok {
			ss.fc.err = err
			close(ss.fc.done)
		}
	})
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	s.url = "tcp://" + e.Addrs[0]
	var once sync.Once
	s.stop = func() { once.Do(e.Stop) }
	t.Cleanup(s.stop)
	return s
}

// newLPFakeWS starts a fake server for WebSocket, on coder/websocket.
func newLPFakeWS(t *testing.T) *lpFakeServer {
	t.Helper()
	s := newLPFakeServerState()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		fc := newLPFakeConn()
		fc.ws = ws
		fc.remote, _ = net.ResolveTCPAddr("tcp", r.RemoteAddr)
		fc.write = func(b []byte) error { return ws.Write(context.Background(), websocket.MessageBinary, b) }
		fc.closeFn = func() { _ = ws.CloseNow() }
		defer close(fc.done)
		for {
			typ, data, err := ws.Read(context.Background())
			if err != nil {
				fc.err = err
				return
			}
			if typ != websocket.MessageBinary {
				fc.err = errors.New("text message")
				_ = ws.CloseNow()
				return
			}
			n, err := s.frames(fc, data)
			if err == nil && n != len(data) {
				err = errors.New("message ends inside a frame")
			}
			if err != nil {
				fc.err = err
				_ = ws.CloseNow()
				return
			}
		}
	}))
	s.url = "ws" + strings.TrimPrefix(hs.URL, "http") + "/herald"
	var once sync.Once
	s.stop = func() { once.Do(hs.Close) }
	t.Cleanup(s.stop)
	return s
}

// lpTransports runs f once per transport.
func lpTransports(t *testing.T, f func(t *testing.T, srv *lpFakeServer, ws bool)) {
	t.Run("tcp", func(t *testing.T) { f(t, newLPFakeTCP(t), false) })
	t.Run("ws", func(t *testing.T) { f(t, newLPFakeWS(t), true) })
}

func lpRecv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(lpTimeout):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func lpDone(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(lpTimeout):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// lpClosed records OnClose calls.
type lpClosed struct {
	c   *LoadConn
	d   *protocol.Disconnect
	err error
}

func newLPPool(t *testing.T, cfg LoadPoolConfig) *LoadPool {
	t.Helper()
	p, err := NewLoadPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func lpCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), lpTimeout)
	t.Cleanup(cancel)
	return ctx
}

func lpPush(i int) *protocol.Frame {
	return &protocol.Frame{
		Type:    protocol.TypePush,
		Stream:  "t:news",
		Epoch:   "e1",
		Seq:     uint64(i + 1),
		MsgID:   fmt.Sprintf("m%d", i),
		Payload: []byte(fmt.Sprintf(`{"n":%d}`, i)),
		Time:    int64(1_700_000_000_000 + i),
	}
}

// lpPushCollector gathers the PUSH frames of one pool.
type lpPushCollector struct {
	mu     sync.Mutex
	frames []protocol.Frame
	want   int
	full   chan struct{}
	bad    []string
}

func newLPPushCollector(want int) *lpPushCollector {
	return &lpPushCollector{want: want, full: make(chan struct{})}
}

func (pc *lpPushCollector) onPush(c *LoadConn, f *protocol.Frame, received time.Time) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if received.IsZero() {
		pc.bad = append(pc.bad, "zero receive time")
	}
	if v := c.Value(); v != "state" {
		pc.bad = append(pc.bad, fmt.Sprintf("Value() = %v", v))
	}
	pc.frames = append(pc.frames, *f)
	if len(pc.frames) == pc.want {
		close(pc.full)
	}
}

func (pc *lpPushCollector) check(t *testing.T) {
	t.Helper()
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.bad) > 0 {
		t.Errorf("OnPush: %v", pc.bad[0])
	}
	if len(pc.frames) != pc.want {
		t.Fatalf("got %d pushes, want %d", len(pc.frames), pc.want)
	}
	for i := range pc.frames {
		if want := lpPush(i); !reflect.DeepEqual(&pc.frames[i], want) {
			t.Fatalf("push %d = %+v, want %+v", i, pc.frames[i], *want)
		}
	}
}

// TestLoadPoolPushes connects, subscribes, and checks that a burst of PUSH
// frames, written one per write, batched, split byte by byte and cut at odd
// places, reaches OnPush complete and in order; then ACK and Close.
func TestLoadPoolPushes(t *testing.T) {
	lpTransports(t, func(t *testing.T, srv *lpFakeServer, ws bool) {
		const n = 120
		pc := newLPPushCollector(n)
		closed := make(chan lpClosed, 1)
		p := newLPPool(t, LoadPoolConfig{
			URL:     srv.url,
			OnPush:  pc.onPush,
			OnClose: func(c *LoadConn, d *protocol.Disconnect, err error) { closed <- lpClosed{c, d, err} },
		})
		resume := []protocol.Position{{Stream: "t:news", Epoch: "e1", Seq: 5}}
		c, err := p.ConnectValue(lpCtx(t), "state", "tok", "dev-1", []string{"news", "sport"}, resume)
		if err != nil {
			t.Fatal(err)
		}
		fc := lpRecv(t, srv.ready, "server connection")
		want := &protocol.Frame{
			Type: protocol.TypeConnect, Version: protocol.Version, Token: "tok", Device: "dev-1",
			Client: LoadClientName, Resume: resume,
		}
		if !reflect.DeepEqual(fc.connect, want) {
			t.Errorf("CONNECT = %+v, want %+v", fc.connect, want)
		}
		if c.Session() != "s1" || p.Open() != 1 || c.ID() != 0 {
			t.Errorf("Session %q Open %d ID %d, want s1 1 0", c.Session(), p.Open(), c.ID())
		}

		var framed [][]byte
		for i := 0; i < n; i++ {
			framed = append(framed, protocol.AppendFramed(nil, lpPush(i)))
		}
		write := func(b []byte) {
			if err := fc.write(b); err != nil {
				t.Fatalf("server write: %v", err)
			}
		}
		for i := 0; i < 30; i++ { // one per write or message
			write(framed[i])
		}
		for i := 30; i < 60; i += 10 { // ten per write or message
			var b []byte
			for _, f := range framed[i : i+10] {
				b = append(b, f...)
			}
			write(b)
		}
		if !ws {
			for i := 60; i < 90; i++ { // byte by byte
				for j := range framed[i] {
					write(framed[i][j : j+1])
				}
			}
			var b []byte // the rest cut every 7 bytes, across frame boundaries
			for _, f := range framed[90:] {
				b = append(b, f...)
			}
			for len(b) > 0 {
				k := min(7, len(b))
				write(b[:k])
				b = b[k:]
			}
		} else {
			for i := 60; i < 90; i += 3 { // three frames per message, fragmented byte by byte
				w, err := fc.ws.Writer(context.Background(), websocket.MessageBinary)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range framed[i : i+3] {
					for j := range f {
						if _, err := w.Write(f[j : j+1]); err != nil {
							t.Fatal(err)
						}
					}
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			}
			var b []byte // the rest in one message
			for _, f := range framed[90:] {
				b = append(b, f...)
			}
			write(b)
		}
		lpDone(t, pc.full, "pushes")
		pc.check(t)

		if err := c.Ack("t:news", n); err != nil {
			t.Fatal(err)
		}
		if f := lpRecv(t, fc.got, "ACK"); f.Type != protocol.TypeAck || f.Stream != "t:news" || f.Seq != n {
			t.Errorf("server got %+v, want ACK t:news %d", f, n)
		}

		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		f := lpRecv(t, fc.got, "DISCONNECT")
		if f.Type != protocol.TypeDisconnect || protocol.DisconnectCode(f.Code) != protocol.DisconnectNormal {
			t.Errorf("server got %+v, want DISCONNECT 3000", f)
		}
		lpDone(t, fc.done, "server side close")
		cl := lpRecv(t, closed, "OnClose")
		if cl.c != c || cl.d != nil || !errors.Is(cl.err, ErrLoadConnClosed) || !errors.Is(cl.err, net.ErrClosed) {
			t.Errorf("OnClose(%p, %v, %v), want (%p, nil, ErrLoadConnClosed)", cl.c, cl.d, cl.err, c)
		}
		if p.Open() != 0 {
			t.Errorf("Open() = %d after Close", p.Open())
		}
		if err := c.Close(); !errors.Is(err, ErrLoadConnClosed) {
			t.Errorf("second Close: %v", err)
		}
		if err := c.Write(&protocol.Frame{Type: protocol.TypePing}); err == nil {
			t.Error("Write after Close succeeded")
		}
	})
}

// TestLoadPoolRefused checks the errors Connect returns when the server
// refuses the CONNECT or a SUBSCRIBE.
func TestLoadPoolRefused(t *testing.T) {
	lpTransports(t, func(t *testing.T, srv *lpFakeServer, ws bool) {
		var closes atomic.Int64
		p := newLPPool(t, LoadPoolConfig{
			URL:     srv.url,
			OnClose: func(*LoadConn, *protocol.Disconnect, error) { closes.Add(1) },
		})
		ctx := lpCtx(t)

		_, err := p.Connect(ctx, "bad", "d", []string{"news"}, nil)
		var perr *protocol.Error
		var disc protocol.Disconnect
		if !errors.As(err, &perr) || perr.Code != protocol.CodeBadToken {
			t.Errorf("bad token: %v, want ERROR 2004", err)
		}
		if !errors.As(err, &disc) || disc.Code != protocol.DisconnectAuthFailed {
			t.Errorf("bad token: %v, want DISCONNECT 3007", err)
		}

		_, err = p.Connect(ctx, "bye", "d", nil, nil)
		if !errors.As(err, &disc) || disc.Code != protocol.DisconnectShutdown || errors.As(err, &perr) {
			t.Errorf("bye: %v, want DISCONNECT 3001 alone", err)
		}

		_, err = p.Connect(ctx, "tok", "d", []string{"news", "forbidden"}, nil)
		if !errors.As(err, &perr) || perr.Code != protocol.CodeForbidden || perr.ID != 2 {
			t.Errorf("forbidden topic: %v, want ERROR 1001 for id 2", err)
		}
		fc := lpRecv(t, srv.ready, "server connection")
		if f := lpRecv(t, fc.got, "DISCONNECT"); f.Type != protocol.TypeDisconnect || protocol.DisconnectCode(f.Code) != protocol.DisconnectNormal {
			t.Errorf("after a refused SUBSCRIBE the server got %+v, want DISCONNECT 3000", f)
		}
		lpDone(t, fc.done, "server side close")

		if p.Open() != 0 || closes.Load() != 0 {
			t.Errorf("Open() = %d, OnClose calls %d after failed connects, want 0 0", p.Open(), closes.Load())
		}
	})
}

// TestLoadPoolPing checks that server PINGs (and WebSocket pings) are
// answered.
func TestLoadPoolPing(t *testing.T) {
	lpTransports(t, func(t *testing.T, srv *lpFakeServer, ws bool) {
		p := newLPPool(t, LoadPoolConfig{URL: srv.url})
		if _, err := p.Connect(lpCtx(t), "tok", "d", nil, nil); err != nil {
			t.Fatal(err)
		}
		fc := lpRecv(t, srv.ready, "server connection")
		fc.send(t, &protocol.Frame{Type: protocol.TypePing, Time: 4242})
		if f := lpRecv(t, fc.got, "PONG"); f.Type != protocol.TypePong || f.Time != 4242 {
			t.Errorf("server got %+v, want PONG 4242", f)
		}
		if ws {
			if err := fc.ws.Ping(lpCtx(t)); err != nil {
				t.Errorf("websocket ping: %v", err)
			}
		}
	})
}

// TestLoadPoolRecoverTopic checks ConnectSubs: a plain subscription gets
// the REPLY's position; one with an epoch sends it with the seq, and the
// replayed PUSH reaches OnPush before OnReply sees the REPLY that ends the
// recovery, and before ConnectSubs returns it.
func TestLoadPoolRecoverTopic(t *testing.T) {
	lpTransports(t, func(t *testing.T, srv *lpFakeServer, ws bool) {
		var mu sync.Mutex
		var events []string
		p := newLPPool(t, LoadPoolConfig{
			URL: srv.url,
			OnPush: func(c *LoadConn, f *protocol.Frame, _ time.Time) {
				mu.Lock()
				events = append(events, fmt.Sprintf("push %v %s %d %s", c.Value(), f.Epoch, f.Seq, f.Payload))
				mu.Unlock()
			},
			OnReply: func(c *LoadConn, f *protocol.Frame) {
				mu.Lock()
				events = append(events, fmt.Sprintf("reply %v %s %s %d %v", c.Value(), f.Stream, f.Epoch, f.Seq, f.Recovered))
				mu.Unlock()
			},
		})
		_, reps, err := p.ConnectSubs(lpCtx(t), 1, "tok", "d", []Sub{{Topic: "recover"}, {Topic: "news"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := []SubReply{{Stream: "t:recover", Epoch: "e1", Seq: 7}, {}}
		if !reflect.DeepEqual(reps, want) {
			t.Errorf("replies %+v, want %+v", reps, want)
		}
		_, reps, err = p.ConnectSubs(lpCtx(t), 2, "tok", "d", []Sub{{Topic: "recover", Epoch: "e1", Seq: 41}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := []SubReply{{Stream: "t:recover", Epoch: "e1", Seq: 42, Recovered: true}}; !reflect.DeepEqual(reps, want) {
			t.Errorf("replies %+v, want %+v", reps, want)
		}
		mu.Lock()
		defer mu.Unlock()
		wantEv := []string{"reply 1 t:recover e1 7 false", "reply 1   0 false", "push 2 e1 42 missed", "reply 2 t:recover e1 42 true"}
		if !reflect.DeepEqual(events, wantEv) {
			t.Errorf("events %q, want %q", events, wantEv)
		}
	})
}

// TestLoadPoolAbort checks that Abort resets the connection: the server's
// read fails, with no DISCONNECT before.
func TestLoadPoolAbort(t *testing.T) {
	lpTransports(t, func(t *testing.T, srv *lpFakeServer, ws bool) {
		closed := make(chan lpClosed, 1)
		p := newLPPool(t, LoadPoolConfig{
			URL:     srv.url,
			OnClose: func(c *LoadConn, d *protocol.Disconnect, err error) { closed <- lpClosed{c, d, err} },
		})
		c, err := p.Connect(lpCtx(t), "tok", "d", []string{"news"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		fc := lpRecv(t, srv.ready, "server connection")
		if err := c.Abort(); err != nil {
			t.Fatal(err)
		}
		lpDone(t, fc.done, "server side close")
		if !errors.Is(fc.err, syscall.ECONNRESET) {
			t.Errorf("server read error %v, want a connection reset", fc.err)
		}
		select {
		case f := <-fc.got:
			t.Errorf("server got %+v before the reset", f)
		default:
		}
		cl := lpRecv(t, closed, "OnClose")
		if cl.d != nil || !errors.Is(cl.err, ErrLoadConnClosed) {
			t.Errorf("OnClose(%v, %v), want (nil, ErrLoadConnClosed)", cl.d, cl.err)
		}
	})
}

// TestLoadPoolServerClose checks what OnClose reports when the server ends
// the connection: its DISCONNECT, or the decoding error of a bad frame.
func TestLoadPoolServerClose(t *testing.T) {
	lpTransports(t, func(t *testing.T, srv *lpFakeServer, ws bool) {
		closed := make(chan lpClosed, 2)
		p := newLPPool(t, LoadPoolConfig{
			URL:     srv.url,
			OnClose: func(c *LoadConn, d *protocol.Disconnect, err error) { closed <- lpClosed{c, d, err} },
		})
		ctx := lpCtx(t)

		c1, err := p.Connect(ctx, "tok", "d1", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		fc := lpRecv(t, srv.ready, "server connection")
		want := protocol.Disconnect{Code: protocol.DisconnectShutdown, Reason: "draining", Reconnect: true, Alt: "other:1"}
		fc.send(t, want.Frame())
		fc.closeFn()
		cl := lpRecv(t, closed, "OnClose")
		if cl.c != c1 || cl.d == nil || *cl.d != want || cl.err != nil {
			t.Errorf("OnClose(%v, %v), want (%v, nil)", cl.d, cl.err, want)
		}

		c2, err := p.Connect(ctx, "tok", "d2", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		fc = lpRecv(t, srv.ready, "server connection")
		if err := fc.write([]byte{0, 0, 0, 2, 9, byte(protocol.TypePush)}); err != nil { // encoding version 9
			t.Fatal(err)
		}
		cl = lpRecv(t, closed, "OnClose")
		if cl.c != c2 || cl.d != nil || !errors.Is(cl.err, protocol.ErrBadVersion) {
			t.Errorf("OnClose(%v, %v), want (nil, ErrBadVersion)", cl.d, cl.err)
		}
		if p.Open() != 0 {
			t.Errorf("Open() = %d", p.Open())
		}
	})
}

// TestLoadPoolConnectAbandoned checks that a Connect the server never
// answers ends with its context, and another with Stop.
func TestLoadPoolConnectAbandoned(t *testing.T) {
	lpTransports(t, func(t *testing.T, srv *lpFakeServer, ws bool) {
		p := newLPPool(t, LoadPoolConfig{URL: srv.url})

		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := p.Connect(ctx, "hang", "d", nil, nil)
			errc <- err
		}()
		lpRecv(t, srv.hung, "hanging connection")
		cancel()
		if err := lpRecv(t, errc, "Connect"); !errors.Is(err, context.Canceled) {
			t.Errorf("Connect after cancel: %v, want context.Canceled", err)
		}

		go func() {
			_, err := p.Connect(context.Background(), "hang", "d", nil, nil)
			errc <- err
		}()
		lpRecv(t, srv.hung, "hanging connection")
		p.Stop()
		if err := lpRecv(t, errc, "Connect"); err == nil {
			t.Error("Connect during Stop succeeded")
		}
		if _, err := p.Connect(lpCtx(t), "tok", "d", nil, nil); err == nil {
			t.Error("Connect after Stop succeeded")
		}
	})
}

// TestLoadPoolManyConnections opens 2,000 connections from several source
// addresses and checks that they hold no goroutines, then that Stop leaves
// none behind.
func TestLoadPoolManyConnections(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	srv := newLPFakeTCP(t)
	const conns, workers = 2000, 32
	local := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"}
	var closes atomic.Int64
	p, err := NewLoadPool(LoadPoolConfig{
		URL:        srv.url,
		LocalAddrs: local,
		Pollers:    2,
		OnClose:    func(*LoadConn, *protocol.Disconnect, error) { closes.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

	before := runtime.NumGoroutine()
	ctx := lpCtx(t)
	var (
		wg   sync.WaitGroup
		next atomic.Int64
		fail atomic.Value
	)
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= conns {
					return
				}
				if _, err := p.Connect(ctx, "tok", fmt.Sprintf("d%d", i), []string{"news"}, nil); err != nil {
					fail.CompareAndSwap(nil, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := fail.Load().(error); err != nil {
		t.Fatal(err)
	}
	after := runtime.NumGoroutine()
	if p.Open() != conns {
		t.Fatalf("Open() = %d, want %d", p.Open(), conns)
	}
	// The workers have returned (a few may not have exited yet): anything
	// per connection would show as thousands.
	if after-before > workers+16 {
		t.Errorf("%d goroutines before the connections, %d with %d idle connections", before, after, conns)
	}
	t.Logf("goroutines: %d before, %d with %d connections", before, after, conns)

	seen := map[string]int{}
	for range conns {
		fc := lpRecv(t, srv.ready, "server connection")
		seen[fc.remote.(*net.TCPAddr).IP.String()]++
	}
	for _, ip := range local {
		if seen[ip] != conns/len(local) {
			t.Errorf("%d connections from %s, want %d (all: %v)", seen[ip], ip, conns/len(local), seen)
		}
	}

	p.Stop()
	if p.Open() != 0 || closes.Load() != conns {
		t.Errorf("after Stop: Open() = %d, OnClose calls %d, want 0 %d", p.Open(), closes.Load(), conns)
	}
	srv.stop()
	goleak.VerifyNone(t, ignore)
}

// TestLoadPoolStopLeavesNoGoroutines runs a pool through its life on both
// transports and checks that no goroutine is left.
func TestLoadPoolStopLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	for _, mk := range []func(*testing.T) *lpFakeServer{newLPFakeTCP, newLPFakeWS} {
		srv := mk(t)
		p, err := NewLoadPool(LoadPoolConfig{URL: srv.url, OnPush: func(*LoadConn, *protocol.Frame, time.Time) {}})
		if err != nil {
			t.Fatal(err)
		}
		var fcs []*lpFakeConn
		for i := range 3 {
			if _, err := p.Connect(lpCtx(t), "tok", fmt.Sprint(i), []string{"news"}, nil); err != nil {
				t.Fatal(err)
			}
			fc := lpRecv(t, srv.ready, "server connection")
			fc.send(t, lpPush(i))
			fcs = append(fcs, fc)
		}
		p.Stop()
		for _, fc := range fcs {
			lpDone(t, fc.done, "server side close")
		}
		srv.stop()
	}
	goleak.VerifyNone(t, ignore)
}

// TestLoadPoolParserSplits feeds the reader a stream cut into pieces of many
// sizes, without a network, and checks every PUSH comes out whole and in
// order: reassembly of partial frames (and, on WebSocket, of fragmented
// messages and 16- and 64-bit lengths, with control frames in between).
func TestLoadPoolParserSplits(t *testing.T) {
	const n = 1500
	var framed []byte
	for i := range n {
		framed = protocol.AppendFramed(framed, lpPush(i))
	}
	// Frames are built by hand here, so that small payloads can carry 16-
	// and 64-bit lengths too (ws.WriteHeader always writes the shortest).
	wsFrame := func(fin bool, op ws.OpCode, payload []byte, ext int) []byte {
		b := []byte{byte(op)}
		if fin {
			b[0] |= 0x80
		}
		switch {
		case ext == 0 && len(payload) <= 125:
			b = append(b, byte(len(payload)))
		case ext <= 16 && len(payload) <= 0xffff:
			b = append(b, 126)
			b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
		default:
			b = append(b, 127)
			b = binary.BigEndian.AppendUint64(b, uint64(len(payload)))
		}
		return append(b, payload...)
	}
	// WebSocket: one frame per message, then batches with 16- and 64-bit
	// lengths, a fragmented message around a pong, and a JSON text message.
	var wsStream []byte
	one := protocol.AppendFramed(nil, lpPush(0))
	wsStream = append(wsStream, wsFrame(true, ws.OpBinary, one, 0)...)
	rest := framed[len(one):]
	cut := func(k int) []byte {
		var b []byte
		for range k {
			_, m, err := protocol.NextFramed(rest, protocol.DefaultLimits())
			if err != nil || m == 0 {
				t.Fatal("bad test stream")
			}
			b, rest = append(b, rest[:m]...), rest[m:]
		}
		return b
	}
	wsStream = append(wsStream, wsFrame(true, ws.OpBinary, cut(20), 16)...)
	wsStream = append(wsStream, wsFrame(true, ws.OpBinary, cut(1000), 64)...)
	frag := cut(50)
	wsStream = append(wsStream, wsFrame(false, ws.OpBinary, frag[:3], 0)...)
	wsStream = append(wsStream, wsFrame(true, ws.OpPong, []byte("p"), 0)...)
	wsStream = append(wsStream, wsFrame(false, ws.OpContinuation, frag[3:1000], 16)...)
	wsStream = append(wsStream, wsFrame(true, ws.OpContinuation, frag[1000:], 16)...)
	jsonMsg := []byte{'['}
	for i := 1071; i < 1073; i++ {
		if i > 1071 {
			jsonMsg = append(jsonMsg, ',')
		}
		jsonMsg = protocol.AppendJSON(jsonMsg, lpPush(i))
	}
	jsonMsg = append(jsonMsg, ']')
	cut(2)
	wsStream = append(wsStream, wsFrame(true, ws.OpText, jsonMsg, 0)...)
	wsStream = append(wsStream, wsFrame(true, ws.OpBinary, rest, 64)...)

	for _, tc := range []struct {
		name   string
		ws     bool
		stream []byte
	}{{"tcp", false, framed}, {"ws", true, wsStream}} {
		for _, size := range []int{1, 2, 3, 5, 7, 13, 64, 1000, 4096, len(tc.stream)} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, size), func(t *testing.T) {
				pc := newLPPushCollector(n)
				p := &LoadPool{cfg: LoadPoolConfig{OnPush: pc.onPush}, lim: protocol.DefaultLimits()}
				p.maxMsg = 16 * (p.lim.MaxFrame + protocol.PrefixSize)
				c := &LoadConn{pool: p, ws: tc.ws}
				c.SetValue("state")
				chunk := make([]byte, size) // reused, as the poller reuses its buffer
				for b := tc.stream; len(b) > 0; {
					k := copy(chunk, b)
					c.onData(chunk[:k], time.Now())
					b = b[k:]
				}
				pc.check(t)
				if c.partial != nil || c.msg != nil {
					t.Errorf("reader holds %d + %d bytes after a complete stream", len(c.partial), len(c.msg))
				}
			})
		}
	}
}

// TestLoadPoolBadConfig checks NewLoadPool's validation.
func TestLoadPoolBadConfig(t *testing.T) {
	for _, cfg := range []LoadPoolConfig{
		{URL: "http//nothing"},
		{URL: "wss://127.0.0.1:1/x"},
		{URL: "tcp://127.0.0.1"},
		{URL: "tcp://127.0.0.1:1", LocalAddrs: []string{"not-an-ip"}},
	} {
		if p, err := NewLoadPool(cfg); err == nil {
			p.Stop()
			t.Errorf("NewLoadPool(%+v) succeeded", cfg)
		}
	}
}
