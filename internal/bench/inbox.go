package bench

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Storm inbox messages: during a storm the coordinator pushes MaxInbox or
// fewer messages to every user's durable inbox through the bulk API, while
// the clients are away (and, with -mode restart, just before the kill too),
// and the workers check that every message the API accepted reaches its
// user's device. Message j (0 <= j < Inbox) of user u carries j as the
// payload's sequence number and has the id "inbox-<u>-<j>".

// MaxInbox bounds the inbox messages per user of a storm.
const MaxInbox = 100

// inboxBatch is how many messages one bulk request carries (the server's
// default max_recipients is 10,000).
const inboxBatch = 500

// inboxConcurrency is how many bulk requests are in flight at once.
const inboxConcurrency = 4

// ackSettle is how long an ACK must have been sent before its connection
// ended for a later copy of the message to count as a real duplicate. The
// protocol allows a device to get a message again on a new connection when
// its ACK was still in flight (or not yet stored) when the old one ended;
// an ACK that had this long to be processed was not in flight.
const ackSettle = time.Second

// inboxCopy is what a worker knows of one inbox message of one user.
type inboxCopy struct {
	first   time.Time // arrival of the first copy; zero: not received
	conn    int       // connection (LoadConn.ID) of the latest copy
	ackConn int       // connection the latest ACK was written on
	ackAt   time.Time // when; zero: never acknowledged
	settled bool      // an ACK had ackSettle to be processed before its connection ended
}

// inboxBook accounts, in a worker, for the inbox messages of its users:
// which arrived, which the coordinator says the API accepted, and which
// copies were redelivered (allowed) or duplicated (not allowed).
type inboxBook struct {
	k     int // messages per user
	users int

	mu          sync.Mutex
	msgs        []inboxCopy // user r, message j at r*k+j
	expected    []byte      // bitmap over msgs; nil until the coordinator sends it
	nExpected   int64
	nGot        int64     // expected messages received
	last        time.Time // latest first arrival of an expected message
	redelivered int64     // copies on a new connection of a message whose ACK may not have been processed
	duplicates  int64     // copies on the same connection, or after a settled ACK
	outOfRange  int64     // inbox payloads naming no message of ours
	done        bool      // reported complete
}

func newInboxBook(users, k int) *inboxBook {
	return &inboxBook{k: k, users: users, msgs: make([]inboxCopy, users*k)}
}

func bitSet(b []byte, i int) bool { return i/8 < len(b) && b[i/8]&(1<<uint(i%8)) != 0 }

// receive records a copy of message j of user r that arrived on connection
// conn at at. It reports whether this completed the expected set.
func (b *inboxBook) receive(r, j, conn int, at time.Time) (complete bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if r < 0 || r >= b.users || j < 0 || j >= b.k {
		b.outOfRange++
		return false
	}
	i := r*b.k + j
	m := &b.msgs[i]
	if m.first.IsZero() {
		m.first, m.conn = at, conn
		if b.expected != nil && bitSet(b.expected, i) {
			b.nGot++
			if at.After(b.last) {
				b.last = at
			}
			return b.checkDone()
		}
		return false
	}
	if m.conn == conn || m.settled {
		b.duplicates++
	} else {
		b.redelivered++
	}
	m.conn = conn
	return false
}

// acked records that message j of user r was acknowledged on conn at at.
func (b *inboxBook) acked(r, j, conn int, at time.Time) {
	if r < 0 || r >= b.users || j < 0 || j >= b.k {
		return
	}
	b.mu.Lock()
	m := &b.msgs[r*b.k+j]
	m.ackConn, m.ackAt = conn, at
	b.mu.Unlock()
}

// ended records that connection conn of user r ended at at: the messages
// acknowledged on it long enough before are settled.
func (b *inboxBook) ended(r, conn int, at time.Time) {
	if r < 0 || r >= b.users {
		return
	}
	b.mu.Lock()
	for j := range b.k {
		m := &b.msgs[r*b.k+j]
		if !m.ackAt.IsZero() && m.ackConn == conn && at.Sub(m.ackAt) >= ackSettle {
			m.settled = true
		}
	}
	b.mu.Unlock()
}

// expect sets which messages the API accepted (a bitmap over user*k+j) and
// reports whether all of them have already arrived.
func (b *inboxBook) expect(bitmap []byte) (complete bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expected = bitmap
	b.nExpected, b.nGot = 0, 0
	for i := range b.msgs {
		if !bitSet(bitmap, i) {
			continue
		}
		b.nExpected++
		if f := b.msgs[i].first; !f.IsZero() {
			b.nGot++
			if f.After(b.last) {
				b.last = f
			}
		}
	}
	return b.checkDone()
}

// checkDone reports, once, that every expected message has arrived. b.mu
// is held.
func (b *inboxBook) checkDone() bool {
	if b.done || b.expected == nil || b.nGot < b.nExpected {
		return false
	}
	b.done = true
	return true
}

// progress returns the expected messages received, those expected, and the
// latest first arrival among them.
func (b *inboxBook) progress() (got, want int64, last time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.nGot, b.nExpected, b.last
}

// counts fills the inbox figures of a worker result; from is the index of
// the worker's first user, for the missing sample.
func (b *inboxBook) counts(res *WorkerResult, from int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	res.InboxExpected = b.nExpected
	res.InboxReceived = b.nGot
	res.InboxMissing = b.nExpected - b.nGot
	res.InboxDuplicates = b.duplicates
	res.InboxRedelivered = b.redelivered
	res.InboxLast = b.last
	for i, m := range b.msgs {
		if m.first.IsZero() {
			continue
		}
		if b.expected == nil || !bitSet(b.expected, i) {
			res.InboxUnconfirmed++
		}
	}
	res.InboxUnconfirmed += b.outOfRange
	for i := range b.msgs {
		if len(res.InboxMissingList) == 10 {
			break
		}
		if bitSet(b.expected, i) && b.msgs[i].first.IsZero() {
			res.InboxMissingList = append(res.InboxMissingList,
				fmt.Sprintf("inbox user %d message %d", from+i/b.k, i%b.k))
		}
	}
}

// inboxID is the message id of inbox message j of user u.
func inboxID(u, j int) string { return "inbox-" + strconv.Itoa(u) + "-" + strconv.Itoa(j) }

// inboxPushes records which inbox messages of a storm the API accepted.
type inboxPushes struct {
	users, k int
	mu       sync.Mutex
	accepted []bool // u*k+j
	sent     int64
	ok       int64
}

func newInboxPushes(users, k int) *inboxPushes {
	return &inboxPushes{users: users, k: k, accepted: make([]bool, users*k)}
}

// push sends messages js of every user through the bulk endpoint, inboxBatch
// to a request, and marks those of requests answered 200 as accepted. A
// request that fails or is refused counts as an error; its messages are
// not expected (a 503 or a lost answer may still have stored some: they
// count as unconfirmed if they arrive).
func (p *inboxPushes) push(ctx context.Context, o Options, js []int, sent *atomic.Int64, errs *counter) {
	if len(js) == 0 || p.users == 0 {
		return
	}
	api := newAPIClient(o.apiTargets(), inboxConcurrency)
	defer api.close()
	path := "/v1/apps/" + url.PathEscape(o.Target.App) + "/push"
	total := p.users * len(js)
	reqs := (total + inboxBatch - 1) / inboxBatch
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range inboxConcurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range jobs {
				p.request(ctx, o, api, path, js, k*inboxBatch, min((k+1)*inboxBatch, total), sent, errs)
			}
		}()
	}
	for k := 0; k < reqs && ctx.Err() == nil; k++ {
		select {
		case jobs <- k:
		case <-ctx.Done():
		}
	}
	close(jobs)
	wg.Wait()
}

// request sends the messages numbered from..to-1 of a push (user-major, so
// a user's messages are in order within a request).
func (p *inboxPushes) request(ctx context.Context, o Options, api *apiClient, path string, js []int, from, to int, sent *atomic.Int64, errs *counter) {
	now := time.Now()
	msgs := make([]map[string]string, 0, to-from)
	idx := make([]int, 0, to-from)
	for n := from; n < to; n++ {
		u, j := n/len(js), js[n%len(js)]
		m := message(inboxID(u, j), makePayload(j, now, o.Size))
		m["user"] = o.prefix + strconv.Itoa(u)
		msgs = append(msgs, m)
		idx = append(idx, u*p.k+j)
	}
	status, err := api.post(ctx, path, map[string]any{"messages": msgs})
	sent.Add(int64(len(msgs)))
	p.mu.Lock()
	p.sent += int64(len(msgs))
	if err == nil && status == 200 {
		p.ok += int64(len(msgs))
		for _, i := range idx {
			p.accepted[i] = true
		}
	}
	p.mu.Unlock()
	if err != nil || status != 200 {
		errs.add("inbox push: " + statusKind(status, err))
	}
}

// bitmap returns the accepted messages of users [from, to) as a base64
// bitmap over (u-from)*k+j, the form a worker's inbox book takes.
func (p *inboxPushes) bitmap(from, to int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := (to - from) * p.k
	b := make([]byte, (n+7)/8)
	for i := range n {
		if p.accepted[from*p.k+i] {
			b[i/8] |= 1 << uint(i%8)
		}
	}
	return base64.StdEncoding.EncodeToString(b)
}

// counts returns the messages sent and accepted so far.
func (p *inboxPushes) counts() (sent, ok int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sent, p.ok
}
