package server

// Helpers of the end-to-end tests: every test starts a real server on
// 127.0.0.1 with ephemeral ports and talks to it over real sockets with the
// Go SDK (client.Conn for frame-level tests, client.Client for the managed
// client) and net/http for the server API.
//
// Nothing here sleeps to synchronise: frames are read with a deadline (the
// Conn is closed by a timer, which fails the read), and server-side effects
// are polled with waitFor until a deadline.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nbiolog "github.com/lesismal/nbio/logging"
	"go.uber.org/goleak"

	"github.com/herald-push/herald/client"
	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/testsvc"
	"github.com/herald-push/herald/protocol"
)

func TestMain(m *testing.M) {
	// nbio logs engine starts and stops with fmt.Printf; keep test output clean.
	nbiolog.SetLevel(nbiolog.LevelNone)
	if len(os.Args) > 1 && os.Args[1] == crashChildArg {
		runCrashChild() // the server of TestCrashNothingLost, killed with -9
		return
	}
	// Package initialisation of nbio's websocket package builds
	// websocket.DefaultEngine (nbhttp.NewEngine in a package-level var),
	// which starts two taskpool goroutines that nothing ever stops. They
	// exist before any test runs; IgnoreCurrent ignores exactly those
	// goroutines (by id), so a taskpool leaked by one of our engines, or
	// anything else started by a test, is still reported.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent())
}

// Two apps, so that tenancy can be tested.
const (
	appA    = "app-a"
	secretA = "secret-of-app-a-0123456789"
	keyA    = "key-of-app-a-0123456789"

	appB    = "app-b"
	secretB = "secret-of-app-b-9876543210"
	keyB    = "key-of-app-b-9876543210"

	testNode = "node-e2e"
)

// waitTime bounds every wait for something that should happen at once.
// It is generous because the race detector and parallel tests on a small
// machine slow everything down; a passing test never waits for it.
const waitTime = 10 * time.Second

// harness is one running server and what a test needs to talk to it.
type harness struct {
	t    testing.TB
	srv  *Server
	cfg  config.Config
	http *http.Client

	stop *stopState // shared by copies of the harness made for subtests
}

type stopState struct {
	once sync.Once
	err  error
}

// withT returns a copy of h that reports to t, for subtests.
func (h *harness) withT(t testing.TB) *harness {
	hh := *h
	hh.t = t
	return &hh
}

// testConfig returns a valid configuration with two apps and every listener
// on an ephemeral loopback port.
func testConfig(t testing.TB) config.Config {
	cfg := config.Default()
	cfg.Node = testNode
	cfg.DataDir = t.TempDir()
	cfg.WS.Addr = "127.0.0.1:0"
	cfg.TCP.Addr = "127.0.0.1:0"
	cfg.API.Addr = "127.0.0.1:0"
	// One fan-out worker: the hub then runs the passes of every topic in
	// the order the messages were published, which the tests use to prove
	// that a message did NOT arrive (a later broadcast arrives first).
	cfg.FanoutWorkers = 1
	cfg.Apps = []config.App{
		{ID: appA, Secret: secretA, APIKeys: []string{keyA}},
		{ID: appB, Secret: secretB, APIKeys: []string{keyB}},
	}
	return cfg
}

// startServer starts a server with testConfig changed by mutate. It is shut
// down when the test ends.
func startServer(t testing.TB, mutate ...func(*config.Config)) *harness {
	t.Helper()
	return startServerWith(t, Options{}, mutate...)
}

// startServerWith is startServer with server options (without a Logger
// the logs are discarded).
func startServerWith(t testing.TB, opt Options, mutate ...func(*config.Config)) *harness {
	t.Helper()
	cfg := testConfig(t)
	for _, f := range mutate {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("invalid test config: %v", err)
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	srv, err := New(cfg, opt)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("server.Start: %v", err)
	}
	h := &harness{
		t:    t,
		srv:  srv,
		cfg:  cfg,
		http: &http.Client{Transport: &http.Transport{}, Timeout: waitTime},
		stop: &stopState{},
	}
	t.Cleanup(func() {
		if err := h.shutdown(""); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return h
}

// shutdown stops the server once; later calls return the first result.
func (h *harness) shutdown(alt string) error {
	h.stop.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTime)
		defer cancel()
		h.stop.err = h.srv.Shutdown(ctx, alt)
		h.http.CloseIdleConnections()
	})
	return h.stop.err
}

// token mints a valid client token.
func (h *harness) token(app, user string, topics ...string) string {
	h.t.Helper()
	return mint(h.t, app, secretOf(app), user, topics, time.Hour, time.Now())
}

func mint(t testing.TB, app, secret, user string, topics []string, ttl time.Duration, now time.Time) string {
	t.Helper()
	tok, err := auth.Mint(app, []byte(secret), user, topics, ttl, now)
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	return tok
}

func secretOf(app string) string {
	switch app {
	case appA:
		return secretA
	case appB:
		return secretB
	}
	return "no-such-app-secret-0123456789"
}

func keyOf(app string) string {
	switch app {
	case appA:
		return keyA
	case appB:
		return keyB
	}
	return ""
}

// transport is a way for a client to reach the server.
type transport struct {
	name string
	tcp  bool
	enc  client.Encoding
}

var (
	wsBinary = transport{name: "ws-binary", enc: client.Binary}
	wsJSON   = transport{name: "ws-json", enc: client.JSON}
	rawTCP   = transport{name: "tcp", tcp: true, enc: client.Binary}

	allTransports = []transport{wsBinary, wsJSON, rawTCP}
)

func (h *harness) url(tr transport) string {
	if tr.tcp {
		return "tcp://" + h.srv.TCPAddr()
	}
	return h.srv.WSURL()
}

// tconn is a client.Conn with test helpers. Reads are bounded: a timer
// closes the Conn when no frame arrives in time, which fails the test.
type tconn struct {
	*client.Conn
	reader
}

// reader holds the bounded-read helpers of a test client (tconn over
// WebSocket or TCP, sconn over SSE).
type reader struct {
	fc       frameConn
	t        testing.TB
	name     string
	timedOut atomic.Bool
}

// frameConn is what the helpers need of a test client's connection.
type frameConn interface {
	ReadFrame() (*protocol.Frame, error)
	WriteFrame(*protocol.Frame) error
	Close() error
}

func newTconn(t testing.TB, c *client.Conn, name string) *tconn {
	return &tconn{Conn: c, reader: reader{fc: c, t: t, name: name}}
}

// dial opens a connection without any frame exchanged.
func (h *harness) dial(tr transport, name string) *tconn {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	c, err := client.DialConn(ctx, h.url(tr), client.DialOptions{
		Encoding:  tr.enc,
		Limits:    protocol.Limits{MaxFrame: h.cfg.MaxFrameSize, MaxPayload: h.cfg.MaxPayload},
		TLSConfig: h.clientTLS(),
	})
	if err != nil {
		h.t.Fatalf("%s: dial %s: %v", name, tr.name, err)
	}
	tc := newTconn(h.t, c, name+"/"+tr.name)
	h.t.Cleanup(func() { _ = c.Close() })
	return tc
}

// connect dials and completes the handshake with token and device.
func (h *harness) connect(tr transport, name, token, device string) *tconn {
	h.t.Helper()
	c := h.dial(tr, name)
	f, err := c.handshake(token, device)
	if err != nil {
		h.t.Fatalf("%s: handshake: %v", c.name, err)
	}
	if f.Node != testNode || f.Session == "" || f.Heartbeat != h.cfg.Heartbeat {
		h.t.Fatalf("%s: CONNECTED = %+v; want node %q, a session and heartbeat %v", c.name, f, testNode, h.cfg.Heartbeat)
	}
	return c
}

func (c *tconn) handshake(token, device string) (*protocol.Frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTime)
	defer cancel()
	return c.Handshake(ctx, token, device, nil)
}

// readWithin returns the next frame, or the read error. timedOut reports
// that nothing arrived within d (the Conn is then closed).
func (c *reader) readWithin(d time.Duration) (f *protocol.Frame, err error, timedOut bool) {
	timer := time.AfterFunc(d, func() {
		c.timedOut.Store(true)
		_ = c.fc.Close()
	})
	f, err = c.fc.ReadFrame()
	timer.Stop()
	return f, err, err != nil && c.timedOut.Load()
}

// next returns the next frame or fails the test.
func (c *reader) next() *protocol.Frame {
	c.t.Helper()
	f, err, timedOut := c.readWithin(waitTime)
	switch {
	case timedOut:
		c.t.Fatalf("%s: no frame within %v", c.name, waitTime)
	case err != nil:
		c.t.Fatalf("%s: read: %v", c.name, err)
	}
	return f
}

// expect returns the next frame, failing the test unless it has type typ.
func (c *reader) expect(typ protocol.Type) *protocol.Frame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("%s: got %s %s; want %s", c.name, f.Type, describe(f), typ)
	}
	return f
}

// expectPush reads a PUSH of stream with payload and returns it.
func (c *reader) expectPush(stream string, payload []byte) *protocol.Frame {
	c.t.Helper()
	f := c.expect(protocol.TypePush)
	if f.Stream != stream || !bytes.Equal(f.Payload, payload) {
		c.t.Fatalf("%s: got PUSH stream %q payload %q; want stream %q payload %q", c.name, f.Stream, f.Payload, stream, payload)
	}
	if f.MsgID == "" || f.Time == 0 {
		c.t.Fatalf("%s: PUSH without msg id or time: %s", c.name, describe(f))
	}
	return f
}

// expectError reads an ERROR with code and request id.
func (c *reader) expectError(code protocol.ErrorCode, id uint32) *protocol.Frame {
	c.t.Helper()
	f := c.expect(protocol.TypeError)
	if protocol.ErrorCode(f.Code) != code || f.ID != id {
		c.t.Fatalf("%s: got ERROR %d id %d (%q); want %d id %d", c.name, f.Code, f.ID, f.Reason, code, id)
	}
	return f
}

// expectDisconnect reads a DISCONNECT with code, checks the reconnect
// advice that goes with the code, and then that the server closes the
// connection.
func (c *tconn) expectDisconnect(code protocol.DisconnectCode) protocol.Disconnect {
	c.t.Helper()
	f := c.expect(protocol.TypeDisconnect)
	d := protocol.DisconnectFrom(f)
	if d.Code != code {
		c.t.Fatalf("%s: got DISCONNECT %d (%s); want %d (%s)", c.name, d.Code, d.Reason, code, code)
	}
	if d.Reconnect != code.Reconnect() {
		c.t.Fatalf("%s: DISCONNECT %d has reconnect=%v; want %v", c.name, d.Code, d.Reconnect, code.Reconnect())
	}
	c.expectClosed()
	return d
}

// expectClosed fails the test unless the server closes the connection
// (rather than sending another frame, or nothing).
func (c *reader) expectClosed() {
	c.t.Helper()
	f, err, timedOut := c.readWithin(waitTime)
	switch {
	case timedOut:
		c.t.Fatalf("%s: the server did not close the connection within %v", c.name, waitTime)
	case err == nil:
		c.t.Fatalf("%s: got %s %s; want the connection closed", c.name, f.Type, describe(f))
	}
}

// subscribe sends SUBSCRIBE and waits for its REPLY.
func (c *tconn) subscribe(id uint32, topic string) {
	c.t.Helper()
	c.write(&protocol.Frame{Type: protocol.TypeSubscribe, ID: id, Topic: topic})
	if f := c.expect(protocol.TypeReply); f.ID != id {
		c.t.Fatalf("%s: REPLY id %d; want %d", c.name, f.ID, id)
	}
}

// ping sends PING and expects the PONG to echo its time.
func (c *tconn) ping(at int64) {
	c.t.Helper()
	c.write(&protocol.Frame{Type: protocol.TypePing, Time: at})
	if f := c.expect(protocol.TypePong); f.Time != at {
		c.t.Fatalf("%s: PONG time %d; want %d", c.name, f.Time, at)
	}
}

func (c *reader) write(f *protocol.Frame) {
	c.t.Helper()
	if err := c.fc.WriteFrame(f); err != nil {
		c.t.Fatalf("%s: write %s: %v", c.name, f.Type, err)
	}
}

func describe(f *protocol.Frame) string {
	return string(protocol.AppendJSON(nil, f))
}

// apiCall sends a request to the server API. body is sent as it is when it
// is a string or []byte and as JSON otherwise; nil sends no body. It
// returns the status and the response body.
func (h *harness) apiCall(method, path, key string, body any) (int, []byte) {
	h.t.Helper()
	status, _, out := h.apiDo(method, path, key, body)
	return status, out
}

// apiDo is apiCall that also returns the response headers.
func (h *harness) apiDo(method, path, key string, body any) (int, http.Header, []byte) {
	h.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			h.t.Fatalf("marshal request: %v", err)
		}
		r = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, h.srv.APIURL()+path, r)
	if err != nil {
		h.t.Fatalf("new request: %v", err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.http.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, out
}

// apiOK sends a request that must succeed and decodes its JSON answer into out.
func (h *harness) apiOK(method, path, key string, body, out any) {
	h.t.Helper()
	status, raw := h.apiCall(method, path, key, body)
	if status != http.StatusOK {
		h.t.Fatalf("%s %s: status %d: %s", method, path, status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			h.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
}

// apiError sends a request that must fail with status and the JSON error
// body {"error":{"code":code,"message":...}}.
func (h *harness) apiError(method, path, key string, body any, status int, code string) {
	h.t.Helper()
	got, raw := h.apiCall(method, path, key, body)
	var e struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(raw, &e); err != nil || e.Error == nil {
		h.t.Fatalf("%s %s: status %d, body %q is not a JSON error (%v)", method, path, got, raw, err)
	}
	if got != status || e.Error.Code != code || e.Error.Message == "" {
		h.t.Fatalf("%s %s: got status %d code %q message %q; want status %d code %q and a message",
			method, path, got, e.Error.Code, e.Error.Message, status, code)
	}
}

// pushResult is the answer to a push to one user, a publish or a broadcast.
type pushResult struct {
	ID          string `json:"id"`
	Connections int    `json:"connections"`
	Subscribers int    `json:"subscribers"`
}

// pushUser pushes a JSON value to user and returns the answer.
func (h *harness) pushUser(app, user string, data any) pushResult {
	h.t.Helper()
	var r pushResult
	h.apiOK("POST", "/v1/apps/"+app+"/users/"+user+"/messages", keyOf(app), map[string]any{"data": data}, &r)
	return r
}

func (h *harness) publish(app, topic string, data any) pushResult {
	h.t.Helper()
	var r pushResult
	h.apiOK("POST", "/v1/apps/"+app+"/topics/"+topic+"/messages", keyOf(app), map[string]any{"data": data}, &r)
	return r
}

func (h *harness) broadcast(app string, data any) pushResult {
	h.t.Helper()
	var r pushResult
	h.apiOK("POST", "/v1/apps/"+app+"/broadcast", keyOf(app), map[string]any{"data": data}, &r)
	return r
}

// jsonOf returns the compact JSON of v, as a pushed payload.
func jsonOf(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFor polls cond until it returns nil, failing the test with cond's
// last error if that takes longer than waitTime.
func waitFor(t testing.TB, what string, cond func() error) {
	t.Helper()
	waitWithin(t, waitTime, what, cond)
}

// waitWithin is waitFor with its own deadline.
func waitWithin(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	testsvc.WaitFor(t, d, what, cond)
}

// waitDisconnects waits until the gateway has counted at least n closed
// connections with reason code.
func (h *harness) waitDisconnects(code protocol.DisconnectCode, n uint64) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("%d disconnects %q", n, code), func() error {
		if got := h.srv.GatewayStats().Disconnects[code]; got < n {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
}

// waitOpen waits until exactly n connections are open.
func (h *harness) waitOpen(n int64) {
	h.t.Helper()
	waitFor(h.t, fmt.Sprintf("%d open connections", n), func() error {
		if got := h.srv.GatewayStats().Open; got != n {
			return fmt.Errorf("%d open", got)
		}
		return nil
	})
}

// asRefusal extracts the *protocol.Error and protocol.Disconnect that an
// error from Handshake wraps.
func asRefusal(err error) (pe *protocol.Error, d protocol.Disconnect, hasD bool) {
	errors.As(err, &pe)
	hasD = errors.As(err, &d)
	return pe, d, hasD
}
