package bench

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	nbiolog "github.com/lesismal/nbio/logging"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/config"
	"github.com/herald-push/herald/internal/server"
	"github.com/herald-push/herald/protocol"
)

// The test binary doubles as the worker process: the coordinator re-runs it
// with workerArg first.
const workerArg = "bench-test-worker"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "serve" { // Spawn runs `<exe> serve ...`
		if err := testServe(os.Args[2:]); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	if len(os.Args) > 1 && os.Args[1] == workerArg {
		nbiolog.SetLevel(nbiolog.LevelNone)
		if err := RunWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testServe runs a Herald server from the flags Spawn gives `herald serve`
// (with the development app), until SIGTERM or SIGINT: what the restart
// storm kills and starts again.
func testServe(args []string) error {
	nbiolog.SetLevel(nbiolog.LevelNone)
	path := ""
	if len(args) > 1 && args[0] == "-config" { // spawnNode puts it first
		path, args = args[1], args[2:]
	}
	cfg, err := config.Load(path, nil)
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, _, err := cfg.EnsureDevApp(); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	srv, err := server.New(cfg, server.Options{})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx, "")
}

func testOptions(t *testing.T, scenario string, target *Target) Options {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		Scenario: scenario, Target: target, Exe: exe, WorkerArgs: []string{workerArg},
		Workers: 2, SrcIPs: 4, Conns: 200, ConnectRate: 4000, Rate: 50, Duration: time.Second,
		Drain: 500 * time.Millisecond, Timeout: time.Minute,
	}
}

// startServer runs a real Herald server in this process.
func startServer(t *testing.T) *Target {
	t.Helper()
	cfg := config.Default()
	cfg.Node = "bench-test"
	cfg.DataDir = t.TempDir()
	cfg.WS.Addr, cfg.TCP.Addr, cfg.API.Addr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Apps = []config.App{{ID: "bench", Secret: "bench-secret-0123456789", APIKeys: []string{"bench-api-key-0123456789"}}}
	cfg.Log.Level = "error"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx, "")
	})
	return &Target{WSURL: srv.WSURL(), TCPAddr: srv.TCPAddr(), APIURL: srv.APIURL(),
		App: "bench", APIKey: "bench-api-key-0123456789", Secret: "bench-secret-0123456789", Transport: "ws"}
}

// TestScenarios runs every scenario, small, against a real server and
// checks that the accounting adds up: nothing missing, nothing duplicated,
// every connection made.
func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	target := startServer(t)
	cases := []struct {
		scenario, transport string
		check               func(t *testing.T, r Result)
	}{
		{"connect", "ws", func(t *testing.T, r Result) {
			if r.ConnectRate <= 0 {
				t.Errorf("connect rate %v", r.ConnectRate)
			}
		}},
		{"fanout", "ws", func(t *testing.T, r Result) {
			if want := int64(200 * 50); r.Expected != want || r.Delivered != want {
				t.Errorf("expected %d delivered %d, want %d", r.Expected, r.Delivered, want)
			}
			if r.Latency.Count != r.Delivered || r.Latency.P99 <= 0 {
				t.Errorf("latency %+v", r.Latency)
			}
		}},
		{"unicast", "tcp", func(t *testing.T, r Result) {
			if r.Expected != 50 || r.Delivered != 50 {
				t.Errorf("expected %d delivered %d, want 50", r.Expected, r.Delivered)
			}
		}},
		{"storm", "tcp", func(t *testing.T, r Result) {
			checkStormInbox(t, r)
		}},
		{"api", "ws", func(t *testing.T, r Result) {
			if r.Sent != 50 || r.Delivered != 50 {
				t.Errorf("sent %d answered %d, want 50", r.Sent, r.Delivered)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.scenario, func(t *testing.T) {
			tg := *target
			tg.Transport = c.transport
			o := testOptions(t, c.scenario, &tg)
			if c.scenario == "storm" {
				o.Inbox, o.TopicMissed = 2, 3
			}
			r, err := Run(context.Background(), o)
			if err != nil {
				t.Fatal(err)
			}
			if why := Failed(r); len(why) > 0 {
				t.Fatalf("failed: %v (errors %v, connect failures %v)", why, r.Errors, r.ConnectFail)
			}
			if c.scenario != "api" && r.Connections != 200 {
				t.Errorf("connections %d, want 200", r.Connections)
			}
			c.check(t, r)
		})
	}
}

// checkStormInbox checks a storm of 200 clients with 2 inbox messages per
// user and 3 topic messages published while they were away: every client
// back, every check message and every inbox message delivered once, every
// topic subscription recovered with the 3 messages.
func checkStormInbox(t *testing.T, r Result) {
	t.Helper()
	if r.RecoveryTime <= 0 || r.CatchUpTime <= 0 {
		t.Errorf("recovery time %v, catch-up time %v", r.RecoveryTime, r.CatchUpTime)
	}
	if r.InboxExpected != 400 || r.InboxDelivered != 400 || r.InboxMissing != 0 || r.InboxDuplicates != 0 {
		t.Errorf("inbox: expected %d delivered %d missing %d duplicates %d, want 400 400 0 0",
			r.InboxExpected, r.InboxDelivered, r.InboxMissing, r.InboxDuplicates)
	}
	if r.TopicExpected != 600 || r.TopicDelivered != 600 || r.TopicMissing != 0 || r.TopicDuplicates != 0 || r.TopicUnconfirmed != 0 {
		t.Errorf("topic: expected %d delivered %d missing %d duplicates %d unconfirmed %d, want 600 600 0 0 0",
			r.TopicExpected, r.TopicDelivered, r.TopicMissing, r.TopicDuplicates, r.TopicUnconfirmed)
	}
	if r.TopicRecovered != 200 || r.TopicUnrecovered != 0 {
		t.Errorf("topic: %d subscriptions recovered, %d not, want 200 0 (notes %v)", r.TopicRecovered, r.TopicUnrecovered, r.Notes)
	}
	if want := int64(200*stormCheckMessages + 400 + 600); r.Expected != want || r.Delivered != want {
		t.Errorf("expected %d delivered %d, want %d (check, inbox and topic messages)", r.Expected, r.Delivered, want)
	}
}

// TestStormRestartInbox kills a server (this test binary, serving) with -9
// in the middle of a storm with inbox messages, restarts it on the same
// data directory, and checks that nothing the API accepted was lost.
func TestStormRestartInbox(t *testing.T) {
	if testing.Short() {
		t.Skip("starts server and worker processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	target, err := Spawn(ctx, exe, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer target.Stop()
	target.Transport = "ws"
	o := testOptions(t, "storm", target)
	o.StormMode, o.Inbox, o.TopicMissed = "restart", 2, 3
	r, err := Run(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if why := Failed(r); len(why) > 0 {
		t.Fatalf("failed: %v (errors %v, connect failures %v, notes %v)", why, r.Errors, r.ConnectFail, r.Notes)
	}
	if r.Connections != 200 {
		t.Errorf("connections %d, want 200", r.Connections)
	}
	checkStormInbox(t, r)
	t.Logf("recovery %v, catch-up %v, redelivered %d, topic repeats %d, notes %v", r.RecoveryTime, r.CatchUpTime, r.InboxRedelivered, r.TopicRepeats, r.Notes)
}

// TestLossyServerIsCaught runs fanout against a fake server that drops
// every 7th delivery and duplicates every 11th: the result must count both
// and the run must fail.
func TestLossyServerIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	fake := newLossyServer(t)
	o := testOptions(t, "fanout", fake)
	o.Conns, o.Rate = 50, 40
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(50 * 40)
	dropped := total / 7
	if r.Expected != total {
		t.Fatalf("expected %d, want %d", r.Expected, total)
	}
	if r.Missing != dropped || r.Delivered != total-dropped {
		t.Errorf("missing %d delivered %d; the fake dropped %d of %d", r.Missing, r.Delivered, dropped, total)
	}
	if r.Duplicates == 0 {
		t.Error("duplicates not counted")
	}
	if len(Failed(r)) == 0 {
		t.Error("a lossy run did not fail")
	}
}

func TestMergeWorkers(t *testing.T) {
	start := time.Now()
	mk := func(from, to int, missing int64) *WorkerResult {
		h := NewHistogram()
		tl := NewTimeline(start)
		for ms := from; ms <= to; ms++ {
			h.Record(time.Duration(ms) * time.Millisecond)
			tl.Delivered(start, time.Duration(ms)*time.Millisecond)
		}
		return &WorkerResult{Connected: 10, Latency: h.Snapshot(), Timeline: tl.Snapshot(),
			Expected: int64(to - from + 1), Received: int64(to-from+1) - missing, Missing: missing,
			RampStart: start, RampEnd: start.Add(time.Second), ConnectFail: map[string]int64{"timeout": 1}}
	}
	var r Result
	if err := mergeWorkers(&r, start, 60, []*WorkerResult{mk(1, 1000, 0), mk(1001, 2000, 3)}); err != nil {
		t.Fatal(err)
	}
	near := func(got, want time.Duration) bool { return got > want*99/100 && got < want*101/100 }
	if !near(r.Latency.P50, 1000*time.Millisecond) || !near(r.Latency.P99, 1980*time.Millisecond) {
		t.Errorf("merged p50 %v p99 %v, want about 1s and 1.98s", r.Latency.P50, r.Latency.P99)
	}
	if r.Connections != 20 || r.Expected != 2000 || r.Missing != 3 || r.ConnectFail["timeout"] != 2 {
		t.Errorf("merged counts: %+v", r)
	}
	if r.ConnectRate != 20 {
		t.Errorf("connect rate %v, want 20/s", r.ConnectRate)
	}
}

func TestPlanSplitsUnderTheFileLimit(t *testing.T) {
	for _, c := range []struct{ n, want, workers int }{{100, 2, 2}, {19000, 2, 2}, {40000, 2, 3}, {100000, 1, 7}} {
		p := plan(c.n, c.want)
		if len(p) != c.workers {
			t.Errorf("plan(%d, %d) = %d workers, want %d", c.n, c.want, len(p), c.workers)
		}
		covered := 0
		for _, r := range p {
			if r[1]-r[0] > maxPerWorker {
				t.Errorf("worker with %d connections", r[1]-r[0])
			}
			covered += r[1] - r[0]
		}
		if covered != c.n {
			t.Errorf("plan(%d) covers %d", c.n, covered)
		}
	}
}

// lossyServer speaks just enough of the protocol over TCP and of the API to
// run fanout, and loses and duplicates messages on purpose.
type lossyServer struct {
	mu    sync.Mutex
	subs  []net.Conn
	count int
}

func newLossyServer(t *testing.T) *Target {
	t.Helper()
	s := &lossyServer{}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apps/{app}/topics/{topic}/messages", s.publish)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {})
	return startFakeServer(t, s.serveConn, mux, func() {
		s.mu.Lock()
		for _, c := range s.subs {
			c.Close()
		}
		s.mu.Unlock()
	})
}

// fakeSecret is the app secret of the fake servers' tokens.
const fakeSecret = "bench-secret-0123456789"

// startFakeServer serves the wire protocol (serveConn on each TCP
// connection) and the HTTP API (mux) on loopback until the test ends,
// calling closeConns then, and returns the target for a run against them.
func startFakeServer(t *testing.T, serveConn func(net.Conn), mux *http.ServeMux, closeConns func()) *Target {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveConn(c)
		}
	}()
	hs := &http.Server{Handler: mux}
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = hs.Serve(hln) }()
	t.Cleanup(func() {
		ln.Close()
		hs.Close()
		closeConns()
	})
	return &Target{TCPAddr: ln.Addr().String(), APIURL: "http://" + hln.Addr().String(),
		App: "bench", APIKey: "k", Secret: fakeSecret, Transport: "tcp"}
}

func (s *lossyServer) serveConn(c net.Conn) {
	readFrames(c, func(f *protocol.Frame) { s.handle(c, f) })
}

// readFrames calls handle with each length-prefixed binary frame read
// from c, until c fails; frames that do not decode are skipped.
func readFrames(c net.Conn, handle func(*protocol.Frame)) {
	r := bufio.NewReader(c)
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		n, err := r.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:n]...)
		for {
			body, used, err := protocol.NextFramed(buf, protocol.DefaultLimits())
			if err != nil || used == 0 {
				break
			}
			var f protocol.Frame
			if protocol.DecodeBinary(body, &f, protocol.DefaultLimits()) == nil {
				handle(&f)
			}
			buf = buf[used:]
		}
	}
}

func (s *lossyServer) handle(c net.Conn, f *protocol.Frame) {
	var reply *protocol.Frame
	switch f.Type {
	case protocol.TypeConnect:
		reply = &protocol.Frame{Type: protocol.TypeConnected, Session: "s", Heartbeat: time.Minute}
	case protocol.TypeSubscribe:
		s.mu.Lock()
		s.subs = append(s.subs, c)
		s.mu.Unlock()
		reply = &protocol.Frame{Type: protocol.TypeReply, ID: f.ID}
	case protocol.TypePing:
		reply = &protocol.Frame{Type: protocol.TypePong, Time: f.Time}
	default:
		return
	}
	s.mu.Lock()
	_, _ = c.Write(protocol.AppendFramed(nil, reply))
	s.mu.Unlock()
}

func (s *lossyServer) publish(w http.ResponseWriter, r *http.Request) {
	var m struct {
		ID  string `json:"id"`
		B64 string `json:"b64"`
	}
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	payload, _ := base64.StdEncoding.DecodeString(m.B64)
	frame := protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypePush, Stream: "t:" + r.PathValue("topic"), MsgID: m.ID, Payload: payload})
	s.mu.Lock()
	for _, c := range s.subs {
		s.count++
		if s.count%7 == 0 {
			continue // lost
		}
		_, _ = c.Write(frame)
		if s.count%11 == 0 {
			_, _ = c.Write(frame) // duplicated
		}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"id":"` + strings.ReplaceAll(m.ID, `"`, "") + `"}`))
}

// TestLossyInboxIsCaught runs a storm with inbox messages against a fake
// server that answers 200 to every push but stores only six of seven, and
// sends every eleventh stored message twice on the same connection: the
// run must count exactly those as missing and as duplicates, and fail.
// The fake's topic has positions but no replay: it answers a SUBSCRIBE with
// a position "recovered" without sending what was missed, and it sends
// every topic message twice with the same seq. The missed topic messages
// must all count as missing; the second copies as allowed repeats.
func TestLossyInboxIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	fake := newLossyInboxServer(t)
	o := testOptions(t, "storm", fake)
	o.Inbox, o.TopicMissed = 2, 3
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	const pushed = 200 * 2
	lost := int64(pushed / 7)
	doubled := int64(pushed/11 - pushed/77) // every 11th, unless lost
	if r.InboxExpected != pushed || r.InboxMissing != lost || r.InboxDelivered != pushed-lost {
		t.Errorf("inbox expected %d missing %d delivered %d; the fake accepted %d and lost %d",
			r.InboxExpected, r.InboxMissing, r.InboxDelivered, pushed, lost)
	}
	if r.InboxDuplicates != doubled {
		t.Errorf("inbox duplicates %d (redelivered %d), the fake sent %d twice", r.InboxDuplicates, r.InboxRedelivered, doubled)
	}
	const missed = 200 * 3
	if r.TopicExpected != missed || r.TopicMissing != missed || r.TopicDelivered != 0 || r.TopicRecovered != 200 {
		t.Errorf("topic expected %d missing %d delivered %d recovered %d; the fake replayed none of %d and said recovered 200 times",
			r.TopicExpected, r.TopicMissing, r.TopicDelivered, r.TopicRecovered, missed)
	}
	if r.TopicRepeats != 200*stormCheckMessages || r.TopicDuplicates != 0 {
		t.Errorf("topic repeats %d duplicates %d, the fake sent each of %d check messages twice to 200 clients",
			r.TopicRepeats, r.TopicDuplicates, stormCheckMessages)
	}
	if r.Missing != lost+missed || r.Duplicates != doubled {
		t.Errorf("missing %d duplicates %d: the inbox and topic losses are not in the totals", r.Missing, r.Duplicates)
	}
	if len(Failed(r)) == 0 {
		t.Error("a run that lost inbox messages did not fail")
	}
}

// TestUnrecoveredTopicIsCaught runs a storm against the fake server of
// TestLossyInboxIsCaught told to answer every resubscription "cannot
// recover": every subscription counts as unrecovered, every missed message
// as missing, and the run fails even with nothing else wrong.
func TestUnrecoveredTopicIsCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	fake := newLossyInbox(t, true)
	o := testOptions(t, "storm", fake.target)
	o.Conns, o.Inbox, o.TopicMissed = 50, 0, 2
	r, err := Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if r.TopicUnrecovered != 50 || r.TopicRecovered != 0 || r.TopicMissing != 100 {
		t.Errorf("topic unrecovered %d recovered %d missing %d, want 50 0 100", r.TopicUnrecovered, r.TopicRecovered, r.TopicMissing)
	}
	why := Failed(r)
	if !strings.Contains(strings.Join(why, "; "), "50 topic subscriptions not recovered") {
		t.Errorf("failed: %v", why)
	}
	if !strings.Contains(strings.Join(r.Notes, "; "), "history no longer holds the position") {
		t.Errorf("the reason is not in the notes: %v", r.Notes)
	}
}

// lossyInboxServer speaks enough of the protocol over TCP and of the API to
// run a storm with inbox messages: CONNECT with a device, catch-up from the
// device's ACK position, SUBSCRIBE, topic publish, bulk push. It loses and
// duplicates inbox messages on purpose. Its topic stream has an epoch and
// seqs but no history: a SUBSCRIBE with a position is answered as
// recovered with nothing replayed or, if honest, as not recovered; every
// topic PUSH is sent twice, with the same seq.
type lossyInboxServer struct {
	verify *auth.Verifier
	honest bool
	target *Target
	topic  uint64 // the topic stream's last seq

	mu     sync.Mutex
	users  map[string]net.Conn // user -> its connection (one device each)
	subs   map[net.Conn]bool
	inbox  map[string][]fakeInboxMsg
	acked  map[string]uint64
	pushes int
}

type fakeInboxMsg struct {
	frame []byte // the PUSH, framed
	seq   uint64
	twice bool
}

func newLossyInboxServer(t *testing.T) *Target {
	t.Helper()
	return newLossyInbox(t, false).target
}

func newLossyInbox(t *testing.T, honest bool) *lossyInboxServer {
	t.Helper()
	s := &lossyInboxServer{
		honest: honest,
		verify: auth.NewVerifier(map[string][]byte{"bench": []byte(fakeSecret)}, nil),
		users:  map[string]net.Conn{}, subs: map[net.Conn]bool{},
		inbox: map[string][]fakeInboxMsg{}, acked: map[string]uint64{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/apps/{app}/topics/{topic}/messages", s.publish)
	mux.HandleFunc("POST /v1/apps/{app}/push", s.bulk)
	s.target = startFakeServer(t, s.serveConn, mux, func() {
		s.mu.Lock()
		for c := range s.subs {
			c.Close()
		}
		s.mu.Unlock()
	})
	return s
}

func (s *lossyInboxServer) serveConn(c net.Conn) {
	defer c.Close()
	user := ""
	defer func() {
		s.mu.Lock()
		if s.users[user] == c {
			delete(s.users, user)
		}
		delete(s.subs, c)
		s.mu.Unlock()
	}()
	readFrames(c, func(f *protocol.Frame) {
		if u := s.handle(c, f); u != "" {
			user = u
		}
	})
}

// handle answers one client frame; it returns the user of a CONNECT.
func (s *lossyInboxServer) handle(c net.Conn, f *protocol.Frame) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch f.Type {
	case protocol.TypeConnect:
		cl, err := s.verify.Verify(f.Token)
		if err != nil {
			_, _ = c.Write(protocol.AppendFramed(nil, protocol.NewDisconnect(protocol.DisconnectAuthFailed).Frame()))
			return ""
		}
		_, _ = c.Write(protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypeConnected, Session: "s", Heartbeat: time.Minute}))
		for _, m := range s.inbox[cl.User] { // catch-up from the position
			if m.seq > s.acked[cl.User] {
				s.send(c, m)
			}
		}
		s.users[cl.User] = c
		return cl.User
	case protocol.TypeSubscribe:
		s.subs[c] = true
		reply := &protocol.Frame{Type: protocol.TypeReply, ID: f.ID, Stream: "t:" + f.Topic, Epoch: "e", Seq: s.topic}
		if f.Epoch != "" { // asks for recovery: none is made
			if s.honest {
				reply.Reason = "history no longer holds the position"
			} else {
				reply.Recovered = true
			}
		}
		_, _ = c.Write(protocol.AppendFramed(nil, reply))
	case protocol.TypeAck:
		user := strings.TrimPrefix(f.Stream, "u:")
		s.acked[user] = max(s.acked[user], f.Seq)
	case protocol.TypePing:
		_, _ = c.Write(protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypePong, Time: f.Time}))
	}
	return ""
}

func (s *lossyInboxServer) send(c net.Conn, m fakeInboxMsg) {
	_, _ = c.Write(m.frame)
	if m.twice {
		_, _ = c.Write(m.frame)
	}
}

func (s *lossyInboxServer) bulk(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Messages []struct {
			User string `json:"user"`
			ID   string `json:"id"`
			B64  string `json:"b64"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	for _, m := range req.Messages {
		s.pushes++
		if s.pushes%7 == 0 {
			continue // accepted, and lost
		}
		payload, _ := base64.StdEncoding.DecodeString(m.B64)
		seq := uint64(len(s.inbox[m.User]) + 1)
		msg := fakeInboxMsg{seq: seq, twice: s.pushes%11 == 0, frame: protocol.AppendFramed(nil, &protocol.Frame{
			Type: protocol.TypePush, Stream: "u:" + m.User, Epoch: "e", Seq: seq, MsgID: m.ID, Payload: payload})}
		s.inbox[m.User] = append(s.inbox[m.User], msg)
		if c := s.users[m.User]; c != nil {
			s.send(c, msg)
		}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"results":[]}`))
}

func (s *lossyInboxServer) publish(w http.ResponseWriter, r *http.Request) {
	var m struct {
		ID  string `json:"id"`
		B64 string `json:"b64"`
	}
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	payload, _ := base64.StdEncoding.DecodeString(m.B64)
	s.mu.Lock()
	s.topic++
	seq := s.topic
	frame := protocol.AppendFramed(nil, &protocol.Frame{Type: protocol.TypePush, Stream: "t:" + r.PathValue("topic"),
		Epoch: "e", Seq: seq, MsgID: m.ID, Payload: payload})
	for c := range s.subs {
		_, _ = c.Write(append(frame, frame...)) // twice, the same seq: a repeat to drop
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"id":"x","seq":%d}`, seq)
}
