package bench

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/protocol"
)

// Assignment is a worker's share of a scenario, sent by the coordinator as
// the first line on the worker's standard input.
type Assignment struct {
	Scenario    string    `json:"scenario"`
	URL         string    `json:"url"`
	Fallbacks   []string  `json:"fallbacks,omitempty"` // cluster: other nodes' URLs, tried in order (from the one that failed) when a connect fails
	LocalAddrs  []string  `json:"local_addrs"`
	App         string    `json:"app"`
	Secret      string    `json:"secret"`
	UserPrefix  string    `json:"user_prefix"`
	From        int       `json:"from"` // first user index (inclusive)
	To          int       `json:"to"`   // last user index (exclusive)
	Topic       string    `json:"topic,omitempty"`
	Messages    int       `json:"messages"`               // sequence numbers 0..Messages-1 exist
	Users       int       `json:"users"`                  // all users of the run (unicast targets)
	Unicast     bool      `json:"unicast"`                // expect only the seqs addressed to our users
	Rate        float64   `json:"rate"`                   // connection attempts per second
	Concurrency int       `json:"concurrency"`            // connection attempts in flight
	Start       time.Time `json:"start"`                  // the run's time origin
	Deadline    time.Time `json:"deadline"`               // the worker exits by then, whatever happens
	MaxSeconds  int       `json:"max_seconds"`            // timeline length
	Retry       bool      `json:"retry_connect"`          // keep retrying failed connects until the deadline
	Inbox       int       `json:"inbox,omitempty"`        // storm: inbox messages per user the coordinator may push (see inbox.go)
	TopicMissed int       `json:"topic_missed,omitempty"` // storm: topic messages the coordinator may publish while the clients are away (see topic.go)
}

// maxFallbacks bounds Assignment.Fallbacks (a receiver's URL index is a
// byte).
const maxFallbacks = 32

// unicastTarget is the user index a unicast message goes to: a fixed
// permutation of the sequence numbers, known to coordinator and workers.
func unicastTarget(seq, users int) int {
	return int((uint64(seq)*2654435761 + 7) % uint64(users))
}

// workerEvent is one line a worker writes on standard output.
type workerEvent struct {
	Event     string        `json:"event"` // progress, ready, recovered, result, error
	Open      int64         `json:"open,omitempty"`
	Failed    int64         `json:"failed,omitempty"`
	At        time.Time     `json:"at,omitempty"`
	Result    *WorkerResult `json:"result,omitempty"`
	Error     string        `json:"error,omitempty"`
	Recovered int64         `json:"recovered,omitempty"`
	InboxGot  int64         `json:"inbox_got,omitempty"`  // inbox: expected messages received
	InboxWant int64         `json:"inbox_want,omitempty"` // inbox: messages the API accepted
	Done      bool          `json:"done,omitempty"`       // inbox: every accepted message arrived (At: the last one)
}

// WorkerResult is what one worker measured.
type WorkerResult struct {
	Connected    int64            `json:"connected"`
	ConnectFail  map[string]int64 `json:"connect_fail"`
	RampStart    time.Time        `json:"ramp_start"`
	RampEnd      time.Time        `json:"ramp_end"`
	Latency      HistSnapshot     `json:"latency"`
	Timeline     TimelineSnapshot `json:"timeline"`
	Expected     int64            `json:"expected"`
	Received     int64            `json:"received"`
	Missing      int64            `json:"missing"`
	Duplicates   int64            `json:"duplicates"`
	Unexpected   int64            `json:"unexpected"`
	MissingList  []string         `json:"missing_sample,omitempty"`
	Disconnects  map[string]int64 `json:"disconnects"`
	RecoveredAt  time.Time        `json:"recovered_at,omitempty"`
	Reconnected  int64            `json:"reconnected"`
	ReconnectErr map[string]int64 `json:"reconnect_fail,omitempty"`

	// Storm inbox messages (see inbox.go).
	InboxExpected    int64     `json:"inbox_expected,omitempty"`    // accepted by the API
	InboxReceived    int64     `json:"inbox_received,omitempty"`    // of those, received (first copies)
	InboxMissing     int64     `json:"inbox_missing,omitempty"`     // accepted, never received
	InboxDuplicates  int64     `json:"inbox_duplicates,omitempty"`  // copies after an ACK that had been processed, or twice on one connection
	InboxRedelivered int64     `json:"inbox_redelivered,omitempty"` // copies on a new connection of messages whose ACK may not have been processed (allowed)
	InboxUnconfirmed int64     `json:"inbox_unconfirmed,omitempty"` // received, but not accepted by the API as far as the coordinator knows
	InboxLast        time.Time `json:"inbox_last,omitempty"`        // first arrival of the last expected message
	InboxMissingList []string  `json:"inbox_missing_sample,omitempty"`

	// Storm topic recovery (see topic.go).
	TopicExpected     int64            `json:"topic_expected,omitempty"`      // accepted missed messages × clients
	TopicReceived     int64            `json:"topic_received,omitempty"`      // of those, received (after dropping repeats by seq)
	TopicMissing      int64            `json:"topic_missing,omitempty"`       // accepted, never received
	TopicDuplicates   int64            `json:"topic_duplicates,omitempty"`    // a missed message again under a new seq
	TopicRepeats      int64            `json:"topic_repeats,omitempty"`       // topic copies at or below the client's position, dropped (allowed)
	TopicUnconfirmed  int64            `json:"topic_unconfirmed,omitempty"`   // missed messages received that the API did not confirm
	TopicRecovered    int64            `json:"topic_recovered,omitempty"`     // resubscriptions whose REPLY said recovered
	TopicUnrecovered  int64            `json:"topic_unrecovered,omitempty"`   // resubscriptions whose REPLY did not
	TopicReasons      map[string]int64 `json:"topic_reasons,omitempty"`       // why not, by the REPLY's reason
	TopicEpochChanged int64            `json:"topic_epoch_changed,omitempty"` // topic frames of another epoch than the first
	TopicMissingList  []string         `json:"topic_missing_sample,omitempty"`
}

// worker holds one worker process's state.
type worker struct {
	a     Assignment
	pools []*LoadPool // one per URL: the assignment's, then the fallbacks
	out   *json.Encoder
	outM  sync.Mutex

	mu          sync.Mutex // guards the measurement state below
	hist        *Histogram
	tl          *Timeline
	tr          *Tracker
	inbox       *inboxBook  // storm with inbox messages, else nil
	topic       *topicBook  // storm with topic messages while away, else nil
	recovering  atomic.Bool // reconnecting after the storm: resubscribe with the topic position
	disconnects map[string]int64

	open      atomic.Int64
	failed    atomic.Int64
	misrouted atomic.Int64 // unicast messages that reached the wrong user
	connMu    sync.Mutex
	conns     []*LoadConn            // by receiver index
	down      map[*LoadConn]struct{} // connections counted down in open (by drop or onClose, whichever came first)
	at        []uint8                // by receiver index: the pool (URL) it connects to
	fails     map[string]int64
}

// RunWorker runs a worker: it reads its Assignment and then commands
// ("drop", "stop") from in, and writes events to out. It returns when told
// to stop, when in closes, or at the assignment's deadline.
func RunWorker(ctx context.Context, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	if !sc.Scan() {
		return errors.New("bench worker: no assignment on stdin")
	}
	var a Assignment
	if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
		return fmt.Errorf("bench worker: assignment: %w", err)
	}
	ctx, cancel := context.WithDeadline(ctx, a.Deadline)
	defer cancel()
	n := a.To - a.From
	w := &worker{
		a:           a,
		out:         json.NewEncoder(out),
		hist:        NewHistogram(),
		tl:          NewTimelineLimit(a.Start, max(a.MaxSeconds, 1)),
		tr:          newWorkerTracker(a, n),
		disconnects: map[string]int64{},
		conns:       make([]*LoadConn, n),
		down:        map[*LoadConn]struct{}{},
		at:          make([]uint8, n),
		fails:       map[string]int64{},
	}
	if a.Inbox > 0 {
		w.inbox = newInboxBook(n, a.Inbox)
	}
	cfg := LoadPoolConfig{URL: a.URL, LocalAddrs: a.LocalAddrs, OnPush: w.onPush, OnClose: w.onClose}
	if a.TopicMissed > 0 && a.Topic != "" {
		w.topic = newTopicBook(a.Topic, n, min(a.TopicMissed, MaxTopicMissed))
		cfg.OnReply = w.onReply
	}
	if len(a.Fallbacks) > maxFallbacks {
		return fmt.Errorf("bench worker: %d fallback URLs, at most %d", len(a.Fallbacks), maxFallbacks)
	}
	defer func() {
		for _, p := range w.pools {
			p.Stop()
		}
	}()
	for k, u := range append([]string{a.URL}, a.Fallbacks...) {
		cfg.URL, cfg.IDBase = u, k<<24 // connection ids unique over the pools
		pool, err := NewLoadPool(cfg)
		if err != nil {
			return err
		}
		w.pools = append(w.pools, pool)
	}

	cmds := make(chan string, 4)
	go func() {
		defer close(cmds)
		for sc.Scan() {
			cmds <- strings.TrimSpace(sc.Text())
		}
	}()

	res := WorkerResult{RampStart: time.Now()}
	w.connectAll(ctx, indexes(n))
	res.RampEnd = time.Now()
	w.emit(workerEvent{Event: "ready", Open: w.open.Load(), Failed: w.failed.Load()})

	for {
		select {
		case <-ctx.Done():
			return w.finish(res)
		case cmd, ok := <-cmds:
			if !ok || cmd == "stop" {
				return w.finish(res)
			}
			switch verb, arg, _ := strings.Cut(cmd, " "); verb {
			case "drop":
				if !w.drop(ctx, &res, arg == "hold", cmds) {
					return w.finish(res)
				}
			default:
				w.command(verb, arg)
			}
		}
	}
}

// command runs a coordinator command that may come at any time: "inbox
// <bitmap>" (the accepted inbox messages) or "topic <mask>" (the accepted
// missed topic messages).
func (w *worker) command(verb, arg string) {
	switch verb {
	case "inbox":
		w.expectInbox(arg)
	case "topic":
		mask, err := strconv.ParseUint(strings.TrimSpace(arg), 10, 64)
		if err != nil {
			w.emit(workerEvent{Event: "error", Error: "topic mask: " + err.Error()})
			return
		}
		if w.topic != nil {
			w.topic.expect(mask)
		}
	}
}

// newWorkerTracker sizes loss accounting for the scenario. A unicast
// message has exactly one receiver, so one bit per message suffices
// (receiver 0 stands for "the right user"); fan-out tracks every receiver.
func newWorkerTracker(a Assignment, n int) *Tracker {
	if a.Unicast {
		tr := NewTracker(1, max(a.Messages, 1))
		for seq := 0; seq < a.Messages; seq++ {
			if u := unicastTarget(seq, a.Users); u >= a.From && u < a.To {
				tr.Expect(0, seq)
			}
		}
		return tr
	}
	tr := NewTracker(max(n, 1), max(a.Messages, 1))
	if a.Messages > 0 {
		tr.ExpectAll()
	}
	return tr
}

func indexes(n int) []int {
	ix := make([]int, n)
	for i := range ix {
		ix[i] = i
	}
	return ix
}

func (w *worker) emit(e workerEvent) {
	w.outM.Lock()
	_ = w.out.Encode(e)
	w.outM.Unlock()
}

// connectAll connects the receivers in ix at the assignment's rate, with
// bounded concurrency, and reports progress. Failed connects are retried
// (with a pause) while the assignment asks for it and time remains.
func (w *worker) connectAll(ctx context.Context, ix []int) {
	rate := w.a.Rate
	if rate <= 0 {
		rate = 1e9
	}
	conc := max(w.a.Concurrency, 1)
	sem := make(chan struct{}, conc)
	var wg sync.WaitGroup
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	lastReport := time.Now()
	for k, r := range ix {
		if d := time.Until(start.Add(time.Duration(k) * interval)); d > 0 {
			select { // the ramp's schedule, not synchronisation
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			w.connectOne(ctx, r)
		}()
		if time.Since(lastReport) > 500*time.Millisecond {
			lastReport = time.Now()
			w.emit(workerEvent{Event: "progress", Open: w.open.Load(), Failed: w.failed.Load()})
		}
	}
	wg.Wait()
}

func (w *worker) connectOne(ctx context.Context, r int) {
	user := w.a.UserPrefix + strconv.Itoa(w.a.From+r)
	var subs []Sub
	if w.a.Topic != "" {
		subs = []Sub{{Topic: w.a.Topic}}
	}
	recovering := w.topic != nil && w.recovering.Load()
	tried := 0 // URLs tried since the last pause
	for attempt := 0; ; attempt++ {
		tok, err := auth.Mint(w.a.App, []byte(w.a.Secret), user, []string{"*"}, 24*time.Hour, time.Now())
		if err != nil {
			w.fail(err)
			return
		}
		if recovering { // the position as it is now, for this attempt
			subs[0] = w.topic.position(r, w.a.Topic)
		}
		w.connMu.Lock()
		k := int(w.at[r])
		w.connMu.Unlock()
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		c, replies, err := w.pools[k].ConnectSubs(cctx, r, tok, "d1", subs, nil)
		cancel()
		if err == nil {
			if recovering && len(replies) == 1 {
				w.topic.resubscribed(subs[0], replies[0])
			}
			w.connMu.Lock()
			w.conns[r] = c
			w.connMu.Unlock()
			w.open.Add(1)
			w.tl.connectionsLocked(&w.mu, time.Now(), w.open.Load())
			return
		}
		if len(w.pools) > 1 && ctx.Err() == nil {
			// Move to the next URL; try each once before pausing.
			w.connMu.Lock()
			w.at[r] = uint8((k + 1) % len(w.pools))
			w.connMu.Unlock()
			if tried++; tried < len(w.pools) {
				continue
			}
			tried = 0
		}
		if !w.a.Retry || ctx.Err() != nil {
			w.fail(err)
			return
		}
		select { // back off before retrying this connection
		case <-ctx.Done():
			w.fail(err)
			return
		case <-time.After(time.Duration(min(attempt+1, 20)) * 50 * time.Millisecond):
		}
	}
}

func (w *worker) fail(err error) {
	w.failed.Add(1)
	w.connMu.Lock()
	w.fails[failKind(err)]++
	w.connMu.Unlock()
}

// failKind reduces a connect error to a short reason for counting.
func failKind(err error) string {
	var d protocol.Disconnect
	var pe *protocol.Error
	switch {
	case errors.As(err, &pe):
		return pe.Code.String()
	case errors.As(err, &d):
		return d.Code.String()
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	s := err.Error()
	for _, k := range []string{"connection refused", "connection reset", "too many open files", "cannot assign requested address", "EOF", "i/o timeout"} {
		if strings.Contains(s, k) {
			return k
		}
	}
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

func (w *worker) onPush(c *LoadConn, f *protocol.Frame, received time.Time) {
	r, ok := c.Value().(int)
	if !ok {
		return
	}
	if w.inbox != nil && strings.HasPrefix(f.Stream, "u:") {
		w.onInboxPush(c, r, f, received)
		return
	}
	if w.topic != nil && f.Stream == w.topic.stream {
		if !w.topic.fresh(r, f.Epoch, f.Seq) {
			return // a repeat: at or below the position
		}
		if seq, _, ok := parsePayload(f.Payload); ok && seq >= topicMissedBase {
			w.topic.missed(r, seq-topicMissedBase)
			return
		}
	}
	if f.Seq > 0 && strings.HasPrefix(f.Stream, "u:") {
		c.AckAfterRead(f.Stream, f.Seq) // as a client with auto-ACK does: the server moves the device's inbox position; topic positions are the client's
	}
	seq, sched, ok := parsePayload(f.Payload)
	if !ok {
		return
	}
	if w.a.Unicast {
		if unicastTarget(seq, w.a.Users) != w.a.From+r {
			w.misrouted.Add(1)
			return
		}
		r = 0
	}
	w.mu.Lock()
	if w.tr.Mark(r, seq) {
		lat := received.Sub(sched)
		w.hist.Record(lat)
		w.tl.Delivered(received, lat)
	}
	w.mu.Unlock()
}

// countDown reports whether c is not yet counted down in open, and marks
// it counted. drop and onClose race for a connection the server closed
// while drop aborted it; whichever comes first counts it.
func (w *worker) countDown(c *LoadConn) bool {
	w.connMu.Lock()
	defer w.connMu.Unlock()
	if _, ok := w.down[c]; ok {
		return false
	}
	w.down[c] = struct{}{}
	return true
}

func (w *worker) onClose(c *LoadConn, d *protocol.Disconnect, err error) {
	if !w.countDown(c) {
		return // drop counted it (and recorded the end for the inbox)
	}
	kind := "closed"
	switch {
	case d != nil:
		kind = d.Code.String()
	case errors.Is(err, ErrLoadConnClosed):
		kind = "closed by the server while the client aborted it"
	case err != nil:
		kind = failKind(err)
	}
	if r, ok := c.Value().(int); ok && w.inbox != nil {
		w.inbox.ended(r, c.ID(), time.Now())
	}
	w.open.Add(-1)
	w.mu.Lock()
	w.disconnects[kind]++
	w.tl.Connections(time.Now(), w.open.Load())
	w.mu.Unlock()
}

// drop aborts every connection at once (no DISCONNECT: a reset, as when a
// network fails) and reconnects them all as fast as the server lets it.
//
// With hold, the clients stay away until the coordinator sends "go" (it
// pushes inbox messages meanwhile, and may send "inbox" commands); "stop",
// the end of the commands or of ctx ends the hold, and drop then returns
// false without reconnecting.
func (w *worker) drop(ctx context.Context, res *WorkerResult, hold bool, cmds <-chan string) bool {
	w.connMu.Lock()
	conns := w.conns
	w.conns = make([]*LoadConn, len(conns))
	w.connMu.Unlock()
	var ix []int
	for r, c := range conns {
		// A connection the server already closed (a restart or kill) may
		// have been counted down by onClose already; countDown decides.
		if c == nil {
			ix = append(ix, r)
			continue
		}
		_ = c.Abort() // fails on a connection the server closed
		if w.countDown(c) {
			w.open.Add(-1)
			if w.inbox != nil {
				w.inbox.ended(r, c.ID(), time.Now())
			}
		}
		ix = append(ix, r)
	}
	w.mu.Lock()
	w.tl.Connections(time.Now(), w.open.Load())
	w.mu.Unlock()
	w.emit(workerEvent{Event: "dropped", At: time.Now(), Open: w.open.Load(), Failed: w.failed.Load()})
	for hold {
		select {
		case <-ctx.Done():
			return false
		case cmd, ok := <-cmds:
			verb, arg, _ := strings.Cut(cmd, " ")
			switch {
			case !ok || verb == "stop":
				return false
			case verb == "go":
				hold = false
			default:
				w.command(verb, arg)
			}
		}
	}
	before := w.failed.Load()
	w.recovering.Store(true)
	a := w.a
	w.a.Rate, w.a.Retry = 0, true // as fast as possible, until back or deadline
	w.connectAll(ctx, ix)
	w.a = a
	res.RecoveredAt = time.Now()
	res.Reconnected = int64(len(ix)) - (w.failed.Load() - before)
	w.emit(workerEvent{Event: "recovered", At: res.RecoveredAt, Open: w.open.Load(), Recovered: res.Reconnected})
	return true
}

func (w *worker) finish(res WorkerResult) error {
	w.mu.Lock()
	res.Latency = w.hist.Snapshot()
	res.Timeline = w.tl.Snapshot()
	res.Expected, res.Received, res.Missing, res.Duplicates, res.Unexpected = w.tr.Counts()
	res.MissingList = w.tr.MissingSample(10)
	res.Unexpected += w.misrouted.Load()
	res.Disconnects = w.disconnects
	w.mu.Unlock()
	if w.inbox != nil {
		w.inbox.counts(&res, w.a.From)
	}
	if w.topic != nil {
		w.topic.counts(&res, w.a.From)
	}
	w.connMu.Lock()
	res.ConnectFail = w.fails
	w.connMu.Unlock()
	res.Connected = w.open.Load()
	w.emit(workerEvent{Event: "result", Result: &res})
	return nil
}

// connectionsLocked records the connection gauge under mu.
func (t *Timeline) connectionsLocked(mu *sync.Mutex, at time.Time, n int64) {
	mu.Lock()
	t.Connections(at, n)
	mu.Unlock()
}

// onReply takes the topic position a REPLY gives, in order with the
// connection's PUSHes.
func (w *worker) onReply(c *LoadConn, f *protocol.Frame) {
	if r, ok := c.Value().(int); ok && f.Stream == w.topic.stream {
		w.topic.reply(r, f.Epoch, f.Seq)
	}
}

// onInboxPush handles a PUSH of a user's inbox during a storm: it is
// acknowledged, as a client with auto-ACK does, and accounted by the inbox
// book.
func (w *worker) onInboxPush(c *LoadConn, r int, f *protocol.Frame, received time.Time) {
	if f.Stream != "u:"+w.a.UserPrefix+strconv.Itoa(w.a.From+r) {
		w.misrouted.Add(1)
		return
	}
	j, _, ok := parsePayload(f.Payload)
	if !ok {
		j = -1 // out of range: counted as unconfirmed
	}
	if w.inbox.receive(r, j, c.ID(), received) {
		w.inboxDone()
	}
	if f.Seq > 0 {
		c.AckAfterRead(f.Stream, f.Seq) // sent when this read is handled
		w.inbox.acked(r, j, c.ID(), time.Now())
	}
}

// expectInbox takes the coordinator's bitmap of the inbox messages the API
// accepted for this worker's users.
func (w *worker) expectInbox(arg string) {
	if w.inbox == nil {
		return
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(arg))
	if err != nil {
		w.emit(workerEvent{Event: "error", Error: "inbox bitmap: " + err.Error()})
		return
	}
	if w.inbox.expect(b) {
		w.inboxDone()
		return
	}
	got, want, _ := w.inbox.progress()
	w.emit(workerEvent{Event: "inbox", InboxGot: got, InboxWant: want})
}

// inboxDone reports that every accepted inbox message has arrived.
func (w *worker) inboxDone() {
	got, want, last := w.inbox.progress()
	w.emit(workerEvent{Event: "inbox", InboxGot: got, InboxWant: want, At: last, Done: true})
}
