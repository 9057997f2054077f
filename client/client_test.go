package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/herald-push/herald/protocol"
)

// stateEvent is one OnState call.
type stateEvent struct {
	state State
	err   error
}

// testClient is a Client with short backoffs whose state changes are
// recorded, closed at the end of the test.
type testClient struct {
	*Client
	states chan stateEvent
}

func newTestClient(t testing.TB, cfg Config) *testClient {
	t.Helper()
	tc := &testClient{states: make(chan stateEvent, 256)}
	if cfg.Token == "" && cfg.TokenFunc == nil {
		cfg.Token = "tok"
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 20*time.Millisecond
	}
	cfg.ConnectTimeout = waitTimeout
	cfg.OnState = func(s State, err error) {
		select {
		case tc.states <- stateEvent{s, err}:
		default:
		}
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.Client = c
	t.Cleanup(func() { _ = c.Close() })
	return tc
}

// connect runs Connect in the background; the returned channel yields its
// result.
func (tc *testClient) connect(t testing.TB) <-chan error {
	ctx := testCtx(t)
	res := make(chan error, 1)
	go func() { res <- tc.Connect(ctx) }()
	return res
}

// waitState waits for OnState(want) and returns its cause.
func (tc *testClient) waitState(t testing.TB, want State) error {
	t.Helper()
	timeout := time.After(waitTimeout)
	for {
		select {
		case ev := <-tc.states:
			if ev.state == want {
				return ev.err
			}
		case <-timeout:
			t.Fatalf("state %s not reached; now %s", want, tc.State())
			return nil
		}
	}
}

func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func waitDone(t testing.TB, c *Client) {
	t.Helper()
	select {
	case <-c.Done():
	case <-time.After(waitTimeout):
		t.Fatalf("client did not stop; state %s", c.State())
	}
}

// start connects tc to srv and completes the handshake; it returns the
// server's side of the connection and the CONNECT.
func start(t testing.TB, tc *testClient, srv *fakeServer, hb time.Duration) (*srvConn, *protocol.Frame) {
	t.Helper()
	res := tc.connect(t)
	sc := srv.accept(t)
	connect := sc.handshake(t, "sess-1", hb)
	if err := recv(t, res, "Connect"); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	return sc, connect
}

func TestClientPushDelivery(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			tc := newTestClient(t, Config{URLs: []string{srv.url}, AutoAck: true, Device: "d1",
				DialOptions: DialOptions{Encoding: tr.enc}})
			sc, connect := start(t, tc, srv, time.Minute)
			if connect.Token != "tok" || connect.Device != "d1" || !slices.Equal(connect.Resume, []protocol.Position{{Stream: "b"}}) {
				t.Fatalf("CONNECT = %+v", *connect)
			}
			if s, n := tc.Session(); s != "sess-1" || n != "node-1" {
				t.Fatalf("Session() = %q, %q", s, n)
			}
			if tc.State() != StateConnected {
				t.Fatalf("State() = %s", tc.State())
			}

			want := []*protocol.Frame{
				pushFrame("u:alice", "e1", 1, `{"hello":"world"}`),
				pushFrame("u:alice", "e1", 2, "\x01\x02"),
				pushFrame("t:news", "e9", 7, `[1,2,3]`),
				pushFrame("b", "", 3, `"bcast"`),
			}
			sc.send(t, want[0])          // one frame per message
			sc.send(t, want[1:]...)      // a batch: one message / one TCP write / a JSON array
			sc.send(t, want[1], want[0]) // already delivered: dropped, but acknowledged again
			for _, f := range want {
				m := recv(t, tc.Messages(), "message")
				wantMsg := Message{Stream: f.Stream, Epoch: f.Epoch, ID: f.MsgID, Seq: f.Seq,
					Payload: f.Payload, Time: time.UnixMilli(f.Time)}
				if !reflect.DeepEqual(m, wantMsg) {
					t.Fatalf("message %+v, want %+v", m, wantMsg)
				}
			}
			// Only the inbox is acknowledged (topic and broadcast positions
			// are the client's), cumulatively: one ACK for the last push
			// of each message or read, so at most one per send above,
			// ending at 2.
			for n, last := 1, uint64(0); last != 2; n++ {
				ack := sc.expect(t, protocol.TypeAck)
				if ack.Stream != "u:alice" || ack.Seq < last || ack.Seq > 2 || n > 3 {
					t.Fatalf("ACK %d: %s/%d after %d; want u:alice, at most 3 ACKs, rising to 2", n, ack.Stream, ack.Seq, last)
				}
				last = ack.Seq
			}
			select {
			case m := <-tc.Messages():
				t.Fatalf("duplicate delivered: %+v", m)
			default:
			}
		})
	}
}

func TestClientOnMessage(t *testing.T) {
	srv := newTCPServer(t)
	got := make(chan Message, 10)
	tc := newTestClient(t, Config{URLs: []string{srv.url}, OnMessage: func(m Message) { got <- m }})
	if tc.Messages() != nil {
		t.Fatal("Messages() is not nil with OnMessage")
	}
	sc, _ := start(t, tc, srv, time.Minute)
	sc.send(t, pushFrame("u:a", "e", 1, "x"), &protocol.Frame{Type: protocol.TypePush, Stream: "b", Payload: []byte("no seq")})
	if m := recv(t, got, "message"); m.Seq != 1 {
		t.Fatalf("first message %+v", m)
	}
	if m := recv(t, got, "message"); string(m.Payload) != "no seq" || m.Seq != 0 {
		t.Fatalf("second message %+v", m)
	}
}

func TestClientConnectRefused(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			tc := newTestClient(t, Config{URLs: []string{srv.url}, DialOptions: DialOptions{Encoding: tr.enc}})
			res := tc.connect(t)
			srv.accept(t).refuse(t, protocol.CodeBadToken, protocol.DisconnectAuthFailed)
			err := recv(t, res, "Connect")
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != protocol.CodeBadToken {
				t.Fatalf("Connect = %v, want *protocol.Error %d", err, protocol.CodeBadToken)
			}
			var d protocol.Disconnect
			if !errors.As(err, &d) || d.Code != protocol.DisconnectAuthFailed {
				t.Fatalf("Connect = %v, want protocol.Disconnect 3007", err)
			}
			waitDone(t, tc.Client)
			if tc.Err() != err {
				t.Fatalf("Err() = %v, want %v", tc.Err(), err)
			}
			if _, ok := <-tc.Messages(); ok {
				t.Fatal("Messages not closed")
			}
			if tc.waitState(t, StateClosed) != err {
				t.Fatal("OnState(closed) without the cause")
			}
			// Done means every goroutine of the client has ended, so no
			// other attempt can be under way.
			select {
			case <-srv.conns:
				t.Fatal("the client reconnected after a final refusal")
			default:
			}
			if err := tc.Connect(testCtx(t)); err != tc.Err() {
				t.Fatalf("Connect after refusal = %v", err)
			}
		})
	}
}

func TestClientConnectRetries(t *testing.T) {
	// A port nobody listens on, then the real server: Connect moves on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "tcp://" + ln.Addr().String()
	_ = ln.Close()

	srv := newTCPServer(t)
	tc := newTestClient(t, Config{URLs: []string{dead, srv.url}})
	res := tc.connect(t)
	sc := srv.accept(t)
	// A server error that is not final is retried.
	sc.refuse(t, protocol.CodeInternal, protocol.DisconnectServerError)
	if err := tc.waitState(t, StateDisconnected); err == nil {
		t.Fatal("failed attempt reported without a cause")
	}
	srv.accept(t).handshake(t, "s2", time.Minute)
	if err := recv(t, res, "Connect"); err != nil {
		t.Fatal(err)
	}
	if s, _ := tc.Session(); s != "s2" {
		t.Fatalf("session %q", s)
	}
}

func TestClientConnectContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "tcp://" + ln.Addr().String()
	_ = ln.Close()
	tc := newTestClient(t, Config{URLs: []string{dead}})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err = tc.Connect(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Connect = %v, want DeadlineExceeded", err)
	}
	if tc.Err() != nil {
		t.Fatalf("a client whose Connect timed out is not closed; Err() = %v", tc.Err())
	}
	if _, err := tc.Ping(testCtx(t)); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Ping = %v, want ErrNotConnected", err)
	}
	if err := tc.Subscribe(testCtx(t), "x"); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Subscribe = %v, want ErrNotConnected", err)
	}
}

func TestClientSubscribe(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			tc := newTestClient(t, Config{URLs: []string{srv.url}, Topics: []string{"cfg"},
				DialOptions: DialOptions{Encoding: tr.enc}})
			sc, _ := start(t, tc, srv, time.Minute)
			sub := sc.expect(t, protocol.TypeSubscribe)
			if sub.Topic != "cfg" || sub.ID == 0 {
				t.Fatalf("SUBSCRIBE %+v", *sub)
			}
			sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: sub.ID})

			ctx := testCtx(t)
			res := make(chan error, 1)
			go func() { res <- tc.Subscribe(ctx, "news") }()
			sub = sc.expect(t, protocol.TypeSubscribe)
			if sub.Topic != "news" {
				t.Fatalf("SUBSCRIBE %+v", *sub)
			}
			sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: sub.ID})
			if err := recv(t, res, "Subscribe"); err != nil {
				t.Fatalf("Subscribe: %v", err)
			}

			go func() { res <- tc.Subscribe(ctx, "secret") }()
			sub = sc.expect(t, protocol.TypeSubscribe)
			sc.send(t, (&protocol.Error{ID: sub.ID, Code: protocol.CodeForbidden, Text: "no"}).Frame())
			err := recv(t, res, "Subscribe")
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != protocol.CodeForbidden || pe.ID != sub.ID {
				t.Fatalf("Subscribe = %v, want *protocol.Error forbidden", err)
			}

			go func() { res <- tc.Unsubscribe(ctx, "cfg") }()
			unsub := sc.expect(t, protocol.TypeUnsubscribe)
			if unsub.Topic != "cfg" {
				t.Fatalf("UNSUBSCRIBE %+v", *unsub)
			}
			sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: unsub.ID})
			if err := recv(t, res, "Unsubscribe"); err != nil {
				t.Fatalf("Unsubscribe: %v", err)
			}

			// After a reconnect, exactly the remembered topics are renewed.
			sc.drop()
			sc = srv.accept(t)
			sc.handshake(t, "sess-2", time.Minute)
			sub = sc.expect(t, protocol.TypeSubscribe)
			if sub.Topic != "news" {
				t.Fatalf("renewed %q, want news", sub.Topic)
			}
			sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: sub.ID})
			tc.waitState(t, StateConnected)
			tc.waitState(t, StateConnected)
			// Nothing else was subscribed: the next frame is our PING.
			go func() {
				_, err := tc.Ping(ctx)
				res <- err
			}()
			ping := sc.expect(t, protocol.TypePing)
			sc.send(t, &protocol.Frame{Type: protocol.TypePong, Time: ping.Time})
			if err := recv(t, res, "Ping"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestClientSubscribeAcrossReconnect: the connection drops before the
// REPLY; Subscribe repeats the request on the next connection.
func TestClientSubscribeAcrossReconnect(t *testing.T) {
	srv := newTCPServer(t)
	tc := newTestClient(t, Config{URLs: []string{srv.url}})
	sc, _ := start(t, tc, srv, time.Minute)
	res := make(chan error, 1)
	ctx := testCtx(t)
	go func() { res <- tc.Subscribe(ctx, "news") }()
	sc.expect(t, protocol.TypeSubscribe)
	sc.drop()
	sc = srv.accept(t)
	sc.handshake(t, "s2", time.Minute)
	sub := sc.expect(t, protocol.TypeSubscribe)
	if sub.Topic != "news" {
		t.Fatalf("SUBSCRIBE %+v", *sub)
	}
	sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: sub.ID})
	if err := recv(t, res, "Subscribe"); err != nil {
		t.Fatal(err)
	}
}

func TestClientAck(t *testing.T) {
	srv := newWSServer(t)
	tc := newTestClient(t, Config{URLs: []string{srv.url}})
	if err := tc.Ack("u:a", 1); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Ack before Connect = %v", err)
	}
	sc, _ := start(t, tc, srv, time.Minute)
	sc.send(t, pushFrame("u:a", "e", 5, "x"))
	m := recv(t, tc.Messages(), "message")
	if err := tc.Ack(m.Stream, m.Seq); err != nil {
		t.Fatal(err)
	}
	if ack := sc.expect(t, protocol.TypeAck); ack.Stream != "u:a" || ack.Seq != 5 {
		t.Fatalf("ACK %+v", *ack)
	}
}

func TestClientReconnectResume(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			tc := newTestClient(t, Config{URLs: []string{srv.url}, Topics: []string{"news"},
				DialOptions: DialOptions{Encoding: tr.enc}})
			sc, _ := start(t, tc, srv, time.Minute)
			tc.waitState(t, StateConnected)
			sub := sc.expect(t, protocol.TypeSubscribe)
			if sub.Epoch != "" || sub.Seq != 0 {
				t.Fatalf("first SUBSCRIBE carries a position: %+v", *sub)
			}
			sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: sub.ID})
			sc.send(t, pushFrame("u:alice", "e1", 1, "1"), pushFrame("u:alice", "e1", 2, "2"),
				pushFrame("t:news", "n1", 10, "n"), pushFrame("u:alice", "e1", 3, "3"))
			for range 4 {
				recv(t, tc.Messages(), "message")
			}

			sc.drop()
			if err := tc.waitState(t, StateDisconnected); err == nil {
				t.Fatal("disconnection without a cause")
			}
			tc.waitState(t, StateConnecting)
			sc = srv.accept(t)
			connect := sc.handshake(t, "sess-2", time.Minute)
			tc.waitState(t, StateConnected)
			wantResume := []protocol.Position{{Stream: "b"}, {Stream: "u:alice", Epoch: "e1", Seq: 3}, {Stream: "t:news", Epoch: "n1", Seq: 10}}
			if !reflect.DeepEqual(connect.Resume, wantResume) {
				t.Fatalf("Resume = %+v, want %+v", connect.Resume, wantResume)
			}
			sub = sc.expect(t, protocol.TypeSubscribe)
			if sub.Topic != "news" || sub.Epoch != "n1" || sub.Seq != 10 {
				t.Fatalf("renewed SUBSCRIBE %+v, want news from n1/10", *sub)
			}
			sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: sub.ID})

			// The server replays from the resume point, overlapping by one:
			// the overlap is dropped; a new epoch starts over.
			sc.send(t, pushFrame("u:alice", "e1", 3, "3"), pushFrame("u:alice", "e1", 4, "4"),
				pushFrame("t:news", "n2", 1, "new epoch"))
			if m := recv(t, tc.Messages(), "message"); m.Seq != 4 {
				t.Fatalf("after resume got seq %d, want 4", m.Seq)
			}
			if m := recv(t, tc.Messages(), "message"); m.Epoch != "n2" || m.Seq != 1 {
				t.Fatalf("got %+v, want n2/1", m)
			}
			if s, _ := tc.Session(); s != "sess-2" {
				t.Fatalf("Session() = %q", s)
			}
		})
	}
}

func TestClientDisconnectNoReconnect(t *testing.T) {
	for _, code := range []protocol.DisconnectCode{protocol.DisconnectReplaced, protocol.DisconnectKicked} {
		t.Run(code.String(), func(t *testing.T) {
			srv := newWSServer(t)
			tc := newTestClient(t, Config{URLs: []string{srv.url}})
			sc, _ := start(t, tc, srv, time.Minute)
			sc.send(t, protocol.NewDisconnect(code).Frame())
			sc.drop()
			waitDone(t, tc.Client)
			var d protocol.Disconnect
			if !errors.As(tc.Err(), &d) || d.Code != code {
				t.Fatalf("Err() = %v, want disconnect %d", tc.Err(), code)
			}
			if _, ok := <-tc.Messages(); ok {
				t.Fatal("Messages not closed")
			}
			select {
			case <-srv.conns:
				t.Fatal("the client reconnected")
			default:
			}
			if _, err := tc.Ping(testCtx(t)); err != tc.Err() {
				t.Fatalf("Ping after stop = %v", err)
			}
		})
	}
}

func TestClientDisconnectAlt(t *testing.T) {
	a, b := newTCPServer(t), newTCPServer(t)
	tc := newTestClient(t, Config{URLs: []string{a.url}})
	sc, _ := start(t, tc, a, time.Minute)
	d := protocol.NewDisconnect(protocol.DisconnectShutdown)
	d.Alt = b.addr
	sc.send(t, d.Frame())
	sc.drop()
	var got protocol.Disconnect
	if err := tc.waitState(t, StateDisconnected); !errors.As(err, &got) || got.Alt != b.addr {
		t.Fatalf("disconnect cause %v", err)
	}
	b.accept(t).handshake(t, "on-b", time.Minute)
	tc.waitState(t, StateConnected)
	if s, _ := tc.Session(); s != "on-b" {
		t.Fatalf("Session() = %q", s)
	}
}

func TestClientTokenFunc(t *testing.T) {
	srv := newTCPServer(t)
	var n atomic.Int32
	tc := newTestClient(t, Config{URLs: []string{srv.url}, TokenFunc: func(ctx context.Context) (string, error) {
		return fmt.Sprintf("tok-%d", n.Add(1)), nil
	}})
	sc, connect := start(t, tc, srv, time.Minute)
	if connect.Token != "tok-1" {
		t.Fatalf("token %q", connect.Token)
	}
	sc.drop()
	// An expired token is refused for good only without a TokenFunc.
	srv.accept(t).refuse(t, protocol.CodeTokenExpired, protocol.DisconnectAuthFailed)
	if err := tc.waitState(t, StateDisconnected); err == nil {
		t.Fatal("no cause")
	}
	if connect := srv.accept(t).handshake(t, "s3", time.Minute); connect.Token != "tok-3" {
		t.Fatalf("token %q", connect.Token)
	}
	tc.waitState(t, StateConnected)
}

func TestClientPingPong(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			tc := newTestClient(t, Config{URLs: []string{srv.url}, DialOptions: DialOptions{Encoding: tr.enc}})
			sc, _ := start(t, tc, srv, time.Minute)

			// The server pings; the client echoes.
			sc.send(t, &protocol.Frame{Type: protocol.TypePing, Time: 12345})
			if pong := sc.expect(t, protocol.TypePong); pong.Time != 12345 {
				t.Fatalf("PONG %+v", *pong)
			}

			// The client pings; Ping measures the round trip. Two at once
			// get distinct Times.
			ctx := testCtx(t)
			res := make(chan error, 2)
			for range 2 {
				go func() {
					rtt, err := tc.Ping(ctx)
					if err == nil && rtt <= 0 {
						err = fmt.Errorf("rtt %v", rtt)
					}
					res <- err
				}()
			}
			p1, p2 := sc.expect(t, protocol.TypePing), sc.expect(t, protocol.TypePing)
			if p1.Time == 0 || p1.Time == p2.Time {
				t.Fatalf("PING times %d, %d", p1.Time, p2.Time)
			}
			sc.send(t, &protocol.Frame{Type: protocol.TypePong, Time: p2.Time}, &protocol.Frame{Type: protocol.TypePong, Time: p1.Time})
			for range 2 {
				if err := recv(t, res, "Ping"); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

func TestClientHeartbeat(t *testing.T) {
	srv := newTCPServer(t)
	// The server announces a minute; PingInterval caps it for the test.
	tc := newTestClient(t, Config{URLs: []string{srv.url}, PingInterval: 50 * time.Millisecond})
	sc, _ := start(t, tc, srv, time.Minute)
	// PINGs come by themselves; answering keeps the connection.
	for range 3 {
		ping := sc.expect(t, protocol.TypePing)
		sc.send(t, &protocol.Frame{Type: protocol.TypePong, Time: ping.Time})
	}
	for len(tc.states) > 0 {
		if ev := <-tc.states; ev.state != StateConnecting && ev.state != StateConnected {
			t.Fatalf("state %s (%v) while the server answered", ev.state, ev.err)
		}
	}
	// Silence from the server: after twice the interval the client gives
	// up on the connection and makes a new one.
	if err := tc.waitState(t, StateDisconnected); !errors.Is(err, ErrHeartbeatTimeout) {
		t.Fatalf("cause %v, want ErrHeartbeatTimeout", err)
	}
	sc.ended(t)
	srv.accept(t).handshake(t, "s2", time.Minute)
	tc.waitState(t, StateConnected)
}

// TestClientSlowConsumer: a full Messages channel stops the reader, but the
// time spent waiting for the application is not taken for server silence.
func TestClientSlowConsumer(t *testing.T) {
	srv := newTCPServer(t)
	tc := newTestClient(t, Config{URLs: []string{srv.url}, Buffer: 1, PingInterval: 10 * time.Millisecond})
	sc, _ := start(t, tc, srv, time.Minute)
	sc.send(t, pushFrame("u:a", "e", 1, "1"), pushFrame("u:a", "e", 2, "2"))
	// The reader is now blocked on message 2. Pings keep going out and
	// nothing is answered; more than 2 intervals pass.
	for range 4 {
		sc.expect(t, protocol.TypePing)
	}
	if tc.State() != StateConnected {
		t.Fatalf("state %s", tc.State())
	}
	for i := range 2 {
		if m := recv(t, tc.Messages(), "message"); m.Seq != uint64(i+1) {
			t.Fatalf("message %+v", m)
		}
	}
}

func TestClientClose(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			srv := tr.server(t)
			ignore := goleak.IgnoreCurrent()
			tc := newTestClient(t, Config{URLs: []string{srv.url}, DialOptions: DialOptions{Encoding: tr.enc}})
			sc, _ := start(t, tc, srv, time.Second)
			if err := tc.Close(); err != nil {
				t.Fatal(err)
			}
			d := sc.expect(t, protocol.TypeDisconnect)
			if protocol.DisconnectCode(d.Code) != protocol.DisconnectNormal {
				t.Fatalf("DISCONNECT %+v", *d)
			}
			sc.ended(t)
			select {
			case <-tc.Done():
			default:
				t.Fatal("Done not closed after Close")
			}
			if !errors.Is(tc.Err(), ErrClosed) {
				t.Fatalf("Err() = %v", tc.Err())
			}
			if tc.waitState(t, StateClosed) != ErrClosed {
				t.Fatal("OnState(closed) without ErrClosed")
			}
			if _, ok := <-tc.Messages(); ok {
				t.Fatal("Messages not closed")
			}
			if err := tc.Close(); err != nil {
				t.Fatal(err)
			}
			if err := tc.Subscribe(testCtx(t), "x"); !errors.Is(err, ErrClosed) {
				t.Fatalf("Subscribe after Close = %v", err)
			}
			srv.close()
			goleak.VerifyNone(t, ignore)
		})
	}
}

func TestClientCloseWhileReconnecting(t *testing.T) {
	srv := newTCPServer(t)
	tc := newTestClient(t, Config{URLs: []string{srv.url}, MinBackoff: 5 * time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	sc, _ := start(t, tc, srv, time.Minute)
	srv.close() // stop listening: every reconnection attempt fails
	sc.ended(t)
	tc.waitState(t, StateConnecting)
	tc.waitState(t, StateDisconnected)
	closed := make(chan struct{})
	go func() {
		_ = tc.Close()
		close(closed)
	}()
	recv(t, closed, "Close")
	if !errors.Is(tc.Err(), ErrClosed) {
		t.Fatalf("Err() = %v", tc.Err())
	}
}

func TestClientCloseDuringConnect(t *testing.T) {
	srv := newTCPServer(t)
	tc := newTestClient(t, Config{URLs: []string{srv.url}})
	res := tc.connect(t)
	srv.accept(t).expect(t, protocol.TypeConnect) // and never answer
	_ = tc.Close()
	if err := recv(t, res, "Connect"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Connect = %v, want ErrClosed", err)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []Config{
		{Token: "t"},
		{URLs: []string{"ws://x"}},
		{URLs: []string{"tcp://x:1"}, Token: "t", DialOptions: DialOptions{Encoding: JSON}},
		{URLs: []string{"ws://x"}, Token: "t", MinBackoff: time.Second, MaxBackoff: time.Millisecond},
		{URLs: []string{"ws://x"}, Token: "t", Topics: []string{""}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 10*time.Millisecond, 100*time.Millisecond
	for n, limit := range []time.Duration{10, 20, 40, 80, 100, 100, 100} {
		limit *= time.Millisecond
		var maxSeen time.Duration
		for range 200 {
			d := backoff(lo, hi, n)
			if d < 0 || d > limit {
				t.Fatalf("backoff(%d) = %v, want [0, %v]", n, d, limit)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < limit/2 {
			t.Errorf("backoff(%d): max of 200 draws %v, want jitter up to %v", n, maxSeen, limit)
		}
	}
	if d := backoff(lo, hi, 1000); d > hi {
		t.Fatalf("backoff(1000) = %v", d)
	}
}

func TestResolveAlt(t *testing.T) {
	for _, tc := range [][3]string{
		{"ws://a:1/ws?x=1", "b:2", "ws://b:2/ws?x=1"},
		{"tcp://a:1", "b:2", "tcp://b:2"},
		{"ws://a:1/ws", "wss://c/ws", "wss://c/ws"},
	} {
		if got := resolveAlt(tc[0], tc[1]); got != tc[2] {
			t.Errorf("resolveAlt(%q, %q) = %q, want %q", tc[0], tc[1], got, tc[2])
		}
	}
}

// TestClientRecoveryReplies: a REPLY's position moves the stream's
// position (so repeats below it are dropped), a REPLY that could not
// recover calls OnUnrecovered, and the broadcast position REPLY (id 0) is
// taken too.
func TestClientRecoveryReplies(t *testing.T) {
	srv := newTCPServer(t)
	lost := make(chan [2]string, 4)
	tc := newTestClient(t, Config{URLs: []string{srv.url}, Topics: []string{"news"},
		OnUnrecovered: func(stream, reason string) { lost <- [2]string{stream, reason} }})
	sc, _ := start(t, tc, srv, time.Minute)
	tc.waitState(t, StateConnected)
	sc.send(t, &protocol.Frame{Type: protocol.TypeReply, Stream: "b", Epoch: "E", Seq: 7})
	sub := sc.expect(t, protocol.TypeSubscribe)
	sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: sub.ID, Stream: "t:news", Epoch: "E", Seq: 4})
	// Repeats at or below the positions are dropped; the next ones arrive.
	sc.send(t, pushFrame("t:news", "E", 4, "old"), pushFrame("b", "E", 7, "old"),
		pushFrame("t:news", "E", 5, "n5"), pushFrame("b", "E", 8, "b8"))
	for _, want := range []string{"n5", "b8"} {
		if m := recv(t, tc.Messages(), "message"); string(m.Payload) != want {
			t.Fatalf("got %q (%s %d); want %q", m.Payload, m.Stream, m.Seq, want)
		}
	}
	sc.drop()
	tc.waitState(t, StateConnecting)
	sc = srv.accept(t)
	connect := sc.handshake(t, "sess-2", time.Minute)
	if !slices.Contains(connect.Resume, protocol.Position{Stream: "b", Epoch: "E", Seq: 8}) {
		t.Fatalf("resume %+v lacks b at 8", connect.Resume)
	}
	sub = sc.expect(t, protocol.TypeSubscribe)
	if sub.Epoch != "E" || sub.Seq != 5 {
		t.Fatalf("renewed SUBSCRIBE %+v; want news from E/5", *sub)
	}
	// History gone: the client is told, and continues from the new head.
	sc.send(t, &protocol.Frame{Type: protocol.TypeReply, ID: sub.ID, Stream: "t:news", Epoch: "E", Seq: 50, Reason: "history no longer holds the position"})
	select {
	case got := <-lost:
		if got[0] != "t:news" || got[1] == "" {
			t.Fatalf("OnUnrecovered(%q, %q)", got[0], got[1])
		}
	case <-time.After(waitTimeout):
		t.Fatal("OnUnrecovered not called")
	}
	sc.send(t, pushFrame("t:news", "E", 50, "old"), pushFrame("t:news", "E", 51, "n51"))
	if m := recv(t, tc.Messages(), "message"); string(m.Payload) != "n51" {
		t.Fatalf("got %q; want n51", m.Payload)
	}
}

func TestResumeLimit(t *testing.T) {
	c, err := New(Config{URLs: []string{"ws://x"}, Token: "t", DialOptions: DialOptions{Limits: protocol.Limits{MaxResume: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, s := range []string{"a", "b", "c"} {
		c.track(&protocol.Frame{Stream: s, Seq: uint64(i + 1)})
	}
	got := c.resume(false)
	want := []protocol.Position{{Stream: "c", Seq: 3}, {Stream: "b", Seq: 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("resume = %+v, want %+v", got, want)
	}
	// Without a broadcast position, one is asked for, within the limit.
	c.mu.Lock()
	delete(c.pos, "b")
	c.mu.Unlock()
	got = c.resume(true)
	want = []protocol.Position{{Stream: "b"}, {Stream: "c", Seq: 3}}
	if !slices.Equal(got, want) {
		t.Fatalf("resume(true) = %+v, want %+v", got, want)
	}
}

func TestClientTLS(t *testing.T) {
	serverTLS, clientTLS := testTLS(t)
	for name, srv := range map[string]*fakeServer{
		"tls": newTCPServerTLS(t, serverTLS),
		"wss": newWSServerTLS(t, serverTLS),
	} {
		t.Run(name, func(t *testing.T) {
			if !strings.HasPrefix(srv.url, name+"://") {
				t.Fatalf("url %s", srv.url)
			}
			tc := newTestClient(t, Config{URLs: []string{srv.url}, DialOptions: DialOptions{TLSConfig: clientTLS}})
			sc, _ := start(t, tc, srv, time.Minute)
			sc.send(t, pushFrame("u:a", "e", 1, "secure"))
			if m := recv(t, tc.Messages(), "message"); string(m.Payload) != "secure" {
				t.Fatalf("message %+v", m)
			}
		})
	}
}

func TestUnsubscribeNotConnected(t *testing.T) {
	c, err := New(Config{URLs: []string{"ws://x"}, Token: "t", Topics: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Unsubscribe(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.topics, []string{"b"}) {
		t.Fatalf("topics %v", c.topics)
	}
}

// TestClientGap: a PUSH that skips sequence numbers of its stream ends the
// session; the Client reconnects from its position and gets what was
// skipped, in order. If the server skips the same numbers again (it no
// longer has them), the stream goes on.
func TestClientGap(t *testing.T) {
	srv := newTCPServer(t)
	tc := newTestClient(t, Config{URLs: []string{srv.url}})
	sc, _ := start(t, tc, srv, time.Minute)
	tc.waitState(t, StateConnected)
	sc.send(t, pushFrame("u:alice", "e1", 1, "1"), pushFrame("u:alice", "e1", 3, "3"))
	if m := recv(t, tc.Messages(), "message"); m.Seq != 1 {
		t.Fatalf("got seq %d, want 1", m.Seq)
	}
	if err := tc.waitState(t, StateDisconnected); !errors.Is(err, ErrGap) {
		t.Fatalf("session ended with %v, want ErrGap", err)
	}
	sc = srv.accept(t)
	connect := sc.handshake(t, "sess-2", time.Minute)
	if !slices.Contains(connect.Resume, protocol.Position{Stream: "u:alice", Epoch: "e1", Seq: 1}) {
		t.Fatalf("resume %+v lacks u:alice at 1", connect.Resume)
	}
	sc.send(t, pushFrame("u:alice", "e1", 2, "2"), pushFrame("u:alice", "e1", 3, "3"), pushFrame("u:alice", "e1", 5, "5"))
	for _, want := range []uint64{2, 3} {
		if m := recv(t, tc.Messages(), "message"); m.Seq != want {
			t.Fatalf("after reconnecting got seq %d, want %d", m.Seq, want)
		}
	}
	// 4 is missing: a second gap, so another reconnect; the server skips 4
	// again, and the Client takes 5.
	tc.waitState(t, StateDisconnected)
	sc = srv.accept(t)
	sc.handshake(t, "sess-3", time.Minute)
	sc.send(t, pushFrame("u:alice", "e1", 5, "5"), pushFrame("u:alice", "e1", 6, "6"))
	for _, want := range []uint64{5, 6} {
		if m := recv(t, tc.Messages(), "message"); m.Seq != want {
			t.Fatalf("after the same gap got seq %d, want %d", m.Seq, want)
		}
	}
}
