package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/herald-push/herald/protocol"
)

// waitTimeout bounds every wait in the tests. Waits end as soon as what
// they wait for happens; the timeout only turns a hang into a failure.
const waitTimeout = 5 * time.Second

// fakeServer is a minimal Herald server for tests: it accepts connections
// and hands them to the test, which plays the server's side frame by frame.
// It is written independently of Conn: it frames with protocol.AppendFramed
// and protocol.NextFramed itself.
type fakeServer struct {
	url   string // ws://host:port/ws or tcp://host:port
	addr  string // host:port
	conns chan *srvConn

	mu     sync.Mutex
	all    []*srvConn
	closed bool

	stop     func() // stops accepting
	wg       sync.WaitGroup
	shutdown sync.Once
}

// newTCPServer starts a fake server speaking raw TCP.
func newTCPServer(t testing.TB) *fakeServer {
	return newTCPServerTLS(t, nil)
}

// testTLS returns a server configuration with httptest's certificate (valid
// for 127.0.0.1) and a client configuration that trusts it.
func testTLS(t testing.TB) (server, client *tls.Config) {
	hs := httptest.NewTLSServer(http.NotFoundHandler())
	defer hs.Close()
	pool := x509.NewCertPool()
	pool.AddCert(hs.Certificate())
	return &tls.Config{Certificates: hs.TLS.Certificates}, &tls.Config{RootCAs: pool}
}

// newTCPServerTLS starts a fake server speaking raw TCP, over TLS when cfg
// is not nil (its URL is then tls://).
func newTCPServerTLS(t testing.TB, cfg *tls.Config) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scheme := "tcp://"
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
		scheme = "tls://"
	}
	s := &fakeServer{
		url:   scheme + ln.Addr().String(),
		addr:  ln.Addr().String(),
		conns: make(chan *srvConn, 16),
		stop:  func() { _ = ln.Close() },
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			sc := newSrvConn(nc, nil)
			if !s.add(sc) {
				_ = nc.Close()
				return
			}
			go func() {
				defer s.wg.Done()
				sc.readTCP()
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

// newWSServer starts a fake server accepting WebSocket on /ws.
func newWSServer(t testing.TB) *fakeServer {
	return newWSServerTLS(t, nil)
}

// newWSServerTLS starts a fake server accepting WebSocket on /ws, over TLS
// when cfg is not nil (its URL is then wss://).
func newWSServerTLS(t testing.TB, cfg *tls.Config) *fakeServer {
	s := &fakeServer{conns: make(chan *srvConn, 16)}
	hs := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			return
		}
		ws.SetReadLimit(1 << 20)
		sc := newSrvConn(nil, ws)
		if !s.add(sc) {
			_ = ws.CloseNow()
			return
		}
		defer s.wg.Done()
		sc.readWS() // the handler owns the connection until it ends
	}))
	if cfg != nil {
		hs.TLS = cfg
		hs.StartTLS()
	} else {
		hs.Start()
	}
	s.url = "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"
	s.addr = hs.Listener.Addr().String()
	s.stop = func() {
		hs.CloseClientConnections()
		hs.Close()
	}
	t.Cleanup(s.close)
	return s
}

// add registers a new connection; on success its reader counts in s.wg and
// must call s.wg.Done when it ends.
func (s *fakeServer) add(sc *srvConn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	s.all = append(s.all, sc)
	select {
	case s.conns <- sc:
	default:
		panic("fakeServer: too many unclaimed connections")
	}
	return true
}

// close stops the server, closes every connection and waits for its
// goroutines.
func (s *fakeServer) close() {
	s.shutdown.Do(func() {
		s.mu.Lock()
		s.closed = true
		all := s.all
		s.mu.Unlock()
		for _, sc := range all {
			sc.drop()
		}
		s.stop()
		s.wg.Wait()
	})
}

// accept returns the next connection a client made.
func (s *fakeServer) accept(t testing.TB) *srvConn {
	t.Helper()
	select {
	case sc := <-s.conns:
		return sc
	case <-time.After(waitTimeout):
		t.Fatal("fake server: no connection")
		return nil
	}
}

// srvConn is the server's side of one connection.
type srvConn struct {
	nc net.Conn        // TCP
	ws *websocket.Conn // WebSocket

	in      chan *protocol.Frame // frames from the client; closed when reading ends
	readErr error                // why reading ended; set before in is closed
	json    atomic.Bool          // the client sent text messages: answer in JSON

	wmu sync.Mutex
}

func newSrvConn(nc net.Conn, ws *websocket.Conn) *srvConn {
	return &srvConn{nc: nc, ws: ws, in: make(chan *protocol.Frame, 1024)}
}

func (sc *srvConn) readTCP() {
	defer close(sc.in)
	lim := protocol.DefaultLimits()
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		for {
			body, n, err := protocol.NextFramed(buf, lim)
			if err != nil {
				sc.readErr = err
				return
			}
			if n == 0 {
				break
			}
			f := new(protocol.Frame)
			if err := protocol.DecodeBinary(body, f, lim); err != nil {
				sc.readErr = err
				return
			}
			buf = buf[n:]
			sc.in <- f
		}
		n, err := sc.nc.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err != nil {
			sc.readErr = err
			return
		}
	}
}

func (sc *srvConn) readWS() {
	defer close(sc.in)
	lim := protocol.DefaultLimits()
	for {
		typ, data, err := sc.ws.Read(context.Background())
		if err != nil {
			sc.readErr = err
			return
		}
		if typ == websocket.MessageText {
			sc.json.Store(true)
			frames, err := protocol.DecodeJSONBatch(data, lim)
			if err != nil {
				sc.readErr = err
				_ = sc.ws.CloseNow()
				return
			}
			for i := range frames {
				sc.in <- &frames[i]
			}
			continue
		}
		for len(data) > 0 {
			body, n, err := protocol.NextFramed(data, lim)
			if err == nil && n == 0 {
				err = errors.New("truncated frame")
			}
			f := new(protocol.Frame)
			if err == nil {
				err = protocol.DecodeBinary(body, f, lim)
			}
			if err != nil {
				sc.readErr = err
				_ = sc.ws.CloseNow()
				return
			}
			data = data[n:]
			sc.in <- f
		}
	}
}

// send writes frames as one WebSocket message (binary, or JSON when the
// client speaks JSON; several frames make a JSON array) or in one TCP write.
func (sc *srvConn) send(t testing.TB, fs ...*protocol.Frame) {
	t.Helper()
	var b []byte
	text := sc.ws != nil && sc.json.Load()
	if text {
		encs := make([]*protocol.Encoded, len(fs))
		for i, f := range fs {
			encs[i] = protocol.Encode(f)
		}
		b = protocol.AppendJSONBatch(nil, encs)
	} else {
		for _, f := range fs {
			b = protocol.AppendFramed(b, f)
		}
	}
	if err := sc.sendRaw(b, text); err != nil {
		t.Fatalf("fake server: send: %v", err)
	}
}

// sendRaw writes b as one WebSocket message or one TCP write.
func (sc *srvConn) sendRaw(b []byte, text bool) error {
	sc.wmu.Lock()
	defer sc.wmu.Unlock()
	if sc.ws != nil {
		typ := websocket.MessageBinary
		if text {
			typ = websocket.MessageText
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		return sc.ws.Write(ctx, typ, b)
	}
	_, err := sc.nc.Write(b)
	return err
}

// drop closes the connection abruptly, without DISCONNECT.
func (sc *srvConn) drop() {
	if sc.ws != nil {
		_ = sc.ws.CloseNow()
	} else {
		_ = sc.nc.Close()
	}
}

// next returns the next frame from the client.
func (sc *srvConn) next(t testing.TB) *protocol.Frame {
	t.Helper()
	select {
	case f, ok := <-sc.in:
		if !ok {
			t.Fatalf("fake server: connection ended: %v", sc.readErr)
		}
		return f
	case <-time.After(waitTimeout):
		t.Fatal("fake server: no frame from the client")
		return nil
	}
}

// expect returns the next frame from the client, which must be of type typ.
// Heartbeat PINGs are skipped unless typ is TypePing.
func (sc *srvConn) expect(t testing.TB, typ protocol.Type) *protocol.Frame {
	t.Helper()
	for {
		f := sc.next(t)
		if f.Type == protocol.TypePing && typ != protocol.TypePing {
			continue
		}
		if f.Type != typ {
			t.Fatalf("fake server: got %s %+v, want %s", f.Type, *f, typ)
		}
		return f
	}
}

// ended waits until the client has closed the connection, skipping frames,
// and returns the read error.
func (sc *srvConn) ended(t testing.TB) error {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case _, ok := <-sc.in:
			if !ok {
				return sc.readErr
			}
		case <-timeout:
			t.Fatal("fake server: the client did not close the connection")
			return nil
		}
	}
}

// handshake reads CONNECT, answers CONNECTED with heartbeat hb and returns
// the CONNECT.
func (sc *srvConn) handshake(t testing.TB, session string, hb time.Duration) *protocol.Frame {
	t.Helper()
	f := sc.expect(t, protocol.TypeConnect)
	sc.send(t, &protocol.Frame{Type: protocol.TypeConnected, Session: session, Node: "node-1",
		Heartbeat: hb, Time: time.Now().UnixMilli()})
	return f
}

// refuse answers the next CONNECT with ERROR code and DISCONNECT dc, then
// closes, as a server refusing a token does.
func (sc *srvConn) refuse(t testing.TB, code protocol.ErrorCode, dc protocol.DisconnectCode) {
	t.Helper()
	sc.expect(t, protocol.TypeConnect)
	pe := &protocol.Error{Code: code, Text: code.String()}
	sc.send(t, pe.Frame(), protocol.NewDisconnect(dc).Frame())
	sc.drop()
}

func pushFrame(stream, epoch string, seq uint64, payload string) *protocol.Frame {
	return &protocol.Frame{Type: protocol.TypePush, Stream: stream, Epoch: epoch, Seq: seq,
		MsgID: fmt.Sprintf("%s-%d", stream, seq), Payload: []byte(payload), Time: 1700000000000 + int64(seq)}
}
