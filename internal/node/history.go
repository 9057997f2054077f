package node

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/protocol"
)

// Topic and broadcast history. With history on (Config.HistorySize > 0) a
// message published to a topic or broadcast to an app is appended once to
// the store stream of that topic (app/t:<topic>) or app (app/b), then fanned
// out; its PUSH frames carry the epoch and seq. History is bounded: at most
// HistorySize messages per stream (Trim, in the background) and HistoryTTL
// of age (each message expires then).
//
// A client that resubscribes with the position it had (epoch, seq) is sent
// what it missed, then a REPLY that says Recovered, then live messages; if
// history no longer holds the position, or the epoch changed, it gets a REPLY
// without Recovered and only live messages.
//
// Order without gaps: a publisher holds the stream's lock from its append
// until its frame is queued for fan-out; a recovery holds the same lock
// from reading the history until its connection is indexed. A plain
// subscription needs no lock: it is indexed first and reads the stream's
// head after, so every message above that head is fanned out to it.

// Published is the outcome of a publish or broadcast.
type Published struct {
	ID          string // message id
	Seq         uint64 // sequence number in the topic or broadcast stream; 0 with history off
	Duplicate   bool   // the id was already in history: nothing new was stored or sent
	Subscribers int    // local connections the message was queued for
}

// historyStream is the store stream of a topic or broadcast stream.
func historyStream(app, stream string) string { return app + "/" + stream }

// Publish stores m in topic's history (if on), then fans it out to the
// local subscribers of topic.
func (n *Node) Publish(ctx context.Context, app, topic string, m Message) (Published, error) {
	return n.publish(ctx, app, topicStream(topic), m, func(e *protocol.Encoded) int { return n.hub.Publish(app, topic, e) })
}

// Broadcast stores m in app's broadcast history (if on), then fans it out
// to every connection of app.
func (n *Node) Broadcast(ctx context.Context, app string, m Message) (Published, error) {
	return n.publish(ctx, app, broadcastStream, m, func(e *protocol.Encoded) int { return n.hub.Broadcast(app, e) })
}

// pubShard orders the publishes of the streams that hash to it. Publishes
// queue in pending; whoever holds lead appends everything queued, one
// store call per stream (so concurrent publishes to a topic share one
// fsync), fans the messages out in order, and completes them. Recoveries
// hold lead too, so no publish falls between a replay and the live flow.
type pubShard struct {
	lead    sync.Mutex
	qmu     sync.Mutex
	pending []*pubReq
}

type pubShards struct {
	seed   maphash.Seed
	shards [numUserLocks]pubShard
}

func (p *pubShards) get(app, stream string) *pubShard {
	return &p.shards[maphash.String(p.seed, app+"\x00"+stream)%numUserLocks]
}

// pubReq is one publish waiting in a pubShard.
type pubReq struct {
	app, stream string
	msg         store.Message
	fanout      func(*protocol.Encoded) int
	res         Published
	err         error
	done        chan struct{}
}

func (n *Node) publish(ctx context.Context, app, stream string, m Message, fanout func(*protocol.Encoded) int) (Published, error) {
	m.ID = n.messageID(m.ID)
	if n.cfg.HistorySize <= 0 {
		return Published{ID: m.ID, Subscribers: fanout(n.pushFrame(stream, m))}, nil
	}
	now := n.cfg.Now()
	// History age is the stream's, not the message's: a message that
	// expired before its neighbours would be a hole a recovery cannot tell
	// from lost history.
	req := &pubReq{app: app, stream: stream, fanout: fanout, done: make(chan struct{}),
		msg: store.Message{ID: m.ID, Payload: m.Payload, Time: now, Expires: now.Add(n.cfg.HistoryTTL)}}
	sh := n.streams.get(app, stream)
	sh.qmu.Lock()
	sh.pending = append(sh.pending, req)
	sh.qmu.Unlock()
	sh.lead.Lock()
	select {
	case <-req.done: // a leader before us took it
	default:
		sh.qmu.Lock()
		batch := sh.pending
		sh.pending = nil
		sh.qmu.Unlock()
		n.publishBatch(batch)
	}
	sh.lead.Unlock()
	return req.res, req.err
}

// publishBatch appends and fans out batch, in order, and completes each
// request. The caller holds the shard's lead.
func (n *Node) publishBatch(batch []*pubReq) {
	// Not a caller's context: an append abandoned half way may still be
	// stored, and then it must also be sent.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for len(batch) > 0 {
		// The first request's stream, and every later one of it, in order.
		app, stream := batch[0].app, batch[0].stream
		var same, rest []*pubReq
		for _, r := range batch {
			if r.app == app && r.stream == stream {
				same = append(same, r)
			} else {
				rest = append(rest, r)
			}
		}
		batch = rest
		msgs := make([]store.Message, len(same))
		for i, r := range same {
			msgs[i] = r.msg
		}
		key := historyStream(app, stream)
		res, err := n.store.Append(ctx, key, msgs...)
		for i, r := range same {
			if err != nil {
				r.err = fmt.Errorf("%w: append to %s: %v", ErrStore, stream, err)
				close(r.done)
				continue
			}
			r.res = Published{ID: r.msg.ID, Seq: res[i].Seq, Duplicate: res[i].Duplicate}
			if !r.res.Duplicate {
				r.res.Subscribers = r.fanout(protocol.Encode(&protocol.Frame{Type: protocol.TypePush, Stream: stream, Epoch: res[i].Epoch,
					Seq: r.res.Seq, MsgID: r.msg.ID, Payload: r.msg.Payload, Time: r.msg.Time.UnixMilli()}))
				n.maybeTrim(key, r.res.Seq)
			}
			close(r.done)
		}
	}
}

// maybeTrim asks RunExpiry to trim key's history every HistorySize/8
// messages past HistorySize.
func (n *Node) maybeTrim(key string, seq uint64) {
	if every := uint64(max(1, n.cfg.HistorySize/8)); seq > uint64(n.cfg.HistorySize) && seq%every == 0 {
		select {
		case n.trims <- key:
		default: // busy: a later publish asks again
		}
	}
}

// head returns the position a new subscriber of stream starts after. The
// caller indexed the connection first.
func (n *Node) head(app, stream string) (epoch string, last uint64) {
	// No deadline: Head reads memory or one key, and a timer per
	// subscription would be garbage in a storm of them.
	epoch, _, last, err := n.store.Head(context.Background(), historyStream(app, stream))
	if err != nil {
		n.log.Warn("stream head", "app", app, "stream", stream, "err", err)
	}
	return epoch, last
}

// positionReply is the REPLY that tells a subscriber of stream where it
// starts: the head read after the connection was indexed.
func (n *Node) positionReply(id uint32, app, stream string, askedRecovery bool) *protocol.Frame {
	reply := &protocol.Frame{Type: protocol.TypeReply, ID: id, Stream: stream}
	if n.cfg.HistorySize <= 0 {
		if askedRecovery {
			reply.Reason = "this server keeps no history"
		}
		return reply
	}
	reply.Epoch, reply.Seq = n.head(app, stream)
	return reply
}

// replay returns the stored messages of stream after (epoch, after) as PUSH
// frames, and the REPLY that ends them: Recovered, or not with the reason.
// The caller holds the stream's lock, so the head cannot move.
//
// allowance is what the connection may still replay (see
// replayAllowance); a replay that costs more is refused too. cost is what
// the replay costs, to charge the connection.
func (n *Node) replay(ctx context.Context, app, stream, epoch string, after uint64, allowance int) (frames []*protocol.Encoded, reply *protocol.Frame, cost int, err error) {
	key := historyStream(app, stream)
	ep, first, last, err := n.store.Head(ctx, key)
	if err != nil {
		return nil, nil, 0, err
	}
	reply = &protocol.Frame{Type: protocol.TypeReply, Stream: stream, Epoch: ep, Seq: last}
	fail := func(reason string) ([]*protocol.Encoded, *protocol.Frame, int, error) {
		reply.Reason = reason
		n.unrecovered.Add(1)
		return nil, reply, 0, nil
	}
	tooMuch := func(cost int) string {
		if cost > n.cfg.ReplayBudget {
			return fmt.Sprintf("more than %d bytes missed: too many to replay", n.cfg.ReplayBudget)
		}
		return fmt.Sprintf("replay limit: this connection may recover %d bytes at once and %d bytes per second", n.cfg.ReplayBurst, n.cfg.ReplayRate)
	}
	limit := min(n.cfg.ReplayBudget, allowance)
	switch {
	case epoch != ep:
		return fail("epoch changed: the server's history was reset")
	case after > last:
		return fail("position is beyond the end of the stream")
	case after+1 < first:
		return fail("history no longer holds the position")
	}
	if frames, cost, ok := n.replays.get(key, ep, last, after, n.cfg.Now()); ok {
		if cost > limit {
			return fail(tooMuch(cost))
		}
		reply.Recovered = true
		n.recovered.Add(uint64(len(frames)))
		return frames, reply, cost, nil
	}
	e := replayEntry{key: key, epoch: ep, last: last, from: after + 1, built: n.cfg.Now()}
	budget := n.cfg.ReplayBudget
	for after < last {
		msgs, rep, err := n.store.Range(ctx, key, after, catchUpPage)
		if errors.Is(err, store.ErrTrimmed) {
			return fail("history no longer holds the position")
		}
		if err != nil {
			return nil, nil, 0, err
		}
		if rep != ep {
			return fail("epoch changed: the server's history was reset")
		}
		if len(msgs) == 0 {
			return fail("history no longer holds the position") // expired
		}
		for _, m := range msgs {
			if m.Seq != after+1 {
				return fail("history no longer holds the position") // expired
			}
			if budget -= len(m.Payload) + 64; n.cfg.ReplayBudget-budget > limit {
				return fail(tooMuch(n.cfg.ReplayBudget - budget))
			}
			e.frames = append(e.frames, protocol.Encode(&protocol.Frame{Type: protocol.TypePush, Stream: stream, Epoch: ep,
				Seq: m.Seq, MsgID: m.ID, Payload: m.Payload, Time: m.Time.UnixMilli()}))
			e.cost = append(e.cost, n.cfg.ReplayBudget-budget)
			after = m.Seq
		}
	}
	n.replays.put(e)
	reply.Recovered = true
	n.recovered.Add(uint64(len(e.frames)))
	return slices.Clip(e.frames), reply, n.cfg.ReplayBudget - budget, nil // shared with the cache
}

// replayAllowance returns the bytes s may replay at now. Each connection
// has a bucket of ReplayBurst bytes that refills at ReplayRate bytes per
// second, kept as one number: the time at which the bytes replayed so far
// will have been paid for (s.replayed). The caller holds s.mu.
func (n *Node) replayAllowance(s *session, now time.Time) int {
	owed := s.replayed - now.UnixNano()
	if owed <= 0 {
		return n.cfg.ReplayBurst
	}
	return max(0, n.cfg.ReplayBurst-int(owed*int64(n.cfg.ReplayRate)/int64(time.Second)))
}

// chargeReplay takes cost bytes from s's replay bucket. The caller holds
// s.mu and checked cost against replayAllowance.
func (n *Node) chargeReplay(s *session, cost int, now time.Time) {
	s.replayed = max(s.replayed, now.UnixNano()) + int64(cost)*int64(time.Second)/int64(n.cfg.ReplayRate)
}

// replayCache shares the frames of recent recoveries. In a reconnect
// storm thousands of clients recover the same topic from nearly the same
// position; without it each would read the history and encode the same
// frames again, one after the other under the stream's lock.
type replayCache struct {
	mu      sync.Mutex
	entries [replayCacheEntries]replayEntry
	next    int
}

// replayEntry is the replay of stream key from seq from to its head last.
// It is valid while the head has not moved and for replayCacheTTL (so
// that it never outlives the history's age limit by more).
type replayEntry struct {
	key, epoch string
	last, from uint64
	built      time.Time
	frames     []*protocol.Encoded // seqs from..last
	cost       []int               // cost[i]: replay bytes of frames[0..i]
}

const (
	replayCacheEntries = 16
	replayCacheBytes   = 64 << 10 // larger replays are not kept
	replayCacheTTL     = 5 * time.Second
)

// get returns the frames after after of key at head last, and their cost.
func (c *replayCache) get(key, epoch string, last, after uint64, now time.Time) ([]*protocol.Encoded, int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.entries {
		e := &c.entries[i]
		if e.key != key || e.epoch != epoch || e.last != last || after+1 < e.from || now.Sub(e.built) > replayCacheTTL {
			continue
		}
		skip := int(after + 1 - e.from)
		cost := 0
		if len(e.frames) > 0 {
			cost = e.cost[len(e.cost)-1]
			if skip > 0 {
				cost -= e.cost[skip-1]
			}
		}
		return slices.Clip(e.frames[skip:]), cost, true // shared: a caller's append must not write into it
	}
	return nil, 0, false
}

// put keeps e, in place of the entry of the same stream or the oldest.
func (c *replayCache) put(e replayEntry) {
	if len(e.cost) > 0 && e.cost[len(e.cost)-1] > replayCacheBytes {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.entries {
		if c.entries[i].key == e.key {
			c.entries[i] = e
			return
		}
	}
	c.entries[c.next] = e
	c.next = (c.next + 1) % replayCacheEntries
}

// recoverStream sends c what it missed of stream since (epoch, after),
// then the REPLY, then indexes it with index, all under the stream's lock.
// refuse, if not nil, returns the frame that answers the request instead
// (nothing is sent or indexed then). Both run under s.mu.
func (n *Node) recoverStream(c *gateway.Conn, s *session, id uint32, stream, epoch string, after uint64, refuse func() *protocol.Frame, index func()) {
	sh := n.streams.get(s.reg.App, stream)
	sh.lead.Lock()
	defer sh.lead.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s.mu.Lock()
	allowance := n.replayAllowance(s, n.cfg.Now())
	s.mu.Unlock()
	frames, reply, cost, err := n.replay(ctx, s.reg.App, stream, epoch, after, allowance)
	if err != nil {
		n.log.Warn("recovery failed", "conn_id", c.ID(), "stream", stream, "err", err)
		reply = &protocol.Frame{Type: protocol.TypeReply, Stream: stream, Reason: "history unavailable"}
		frames = nil
		reply.Epoch, reply.Seq = n.head(s.reg.App, stream)
	}
	reply.ID = id
	s.mu.Lock()
	released := s.released
	var refusal *protocol.Frame
	if !released && refuse != nil {
		refusal = refuse()
	}
	if !released && refusal == nil && cost > 0 {
		n.chargeReplay(s, cost, n.cfg.Now())
	}
	s.mu.Unlock()
	if refusal != nil {
		_ = c.SendFrame(refusal)
		return
	}
	if released {
		return
	}
	// Sent before c is indexed: a message still queued for fan-out from
	// before the lock (seq <= the head) can only follow the REPLY, and the
	// client drops it as already seen. Indexed first, it could come before
	// the replay, and the client would drop the replay instead.
	_ = c.Send(append(frames, protocol.Encode(reply))...)
	s.mu.Lock()
	if !s.released {
		index()
	}
	s.mu.Unlock()
	if n.log.Enabled(context.Background(), slog.LevelDebug) {
		n.log.Debug("recovery", "conn_id", c.ID(), "stream", stream, "from", after, "to", reply.Seq, "recovered", reply.Recovered, "reason", reply.Reason)
	}
}

// subscribe handles SUBSCRIBE: a plain subscription on the event loop, a
// recovery (a SUBSCRIBE with an epoch, history on) off it.
func (n *Node) subscribe(c *gateway.Conn, s *session, f *protocol.Frame) {
	if !auth.ValidName(f.Topic) {
		_ = c.SendFrame((&protocol.Error{ID: f.ID, Code: protocol.CodeBadName, Text: "topic must be 1-128 printable bytes without spaces"}).Frame())
		return
	}
	if !(auth.Claims{Topics: s.allowed}).TopicAllowed(f.Topic) {
		_ = c.SendFrame((&protocol.Error{ID: f.ID, Code: protocol.CodeForbidden, Text: fmt.Sprintf("token does not allow topic %q", f.Topic)}).Frame())
		return
	}
	if f.Epoch != "" && n.cfg.HistorySize > 0 {
		n.serialize(c, s, f.ID, func() {
			n.recoverStream(c, s, f.ID, topicStream(f.Topic), f.Epoch, f.Seq,
				func() *protocol.Frame { return n.topicRefusal(s, f) },
				func() { n.indexTopic(c, s, f.Topic) })
		}, true)
		return
	}
	n.serialize(c, s, f.ID, func() { n.plainSubscribe(c, s, f) }, false)
}

// plainSubscribe subscribes c to f.Topic and answers with the topic
// stream's position.
func (n *Node) plainSubscribe(c *gateway.Conn, s *session, f *protocol.Frame) {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		return
	}
	refusal := n.topicRefusal(s, f)
	if refusal == nil {
		n.indexTopic(c, s, f.Topic)
	}
	s.mu.Unlock()
	if refusal != nil {
		_ = c.SendFrame(refusal)
		return
	}
	_ = c.SendFrame(n.positionReply(f.ID, s.reg.App, topicStream(f.Topic), f.Epoch != ""))
}

// topicRefusal returns the frame that answers a SUBSCRIBE without
// subscribing: a plain REPLY if s is subscribed already, an ERROR at the
// subscription limit; nil otherwise. The caller holds s.mu.
func (n *Node) topicRefusal(s *session, f *protocol.Frame) *protocol.Frame {
	switch {
	case slices.Contains(s.topics, f.Topic):
		return &protocol.Frame{Type: protocol.TypeReply, ID: f.ID}
	case len(s.topics) >= n.cfg.MaxSubscriptions:
		return (&protocol.Error{ID: f.ID, Code: protocol.CodeTooManySubscriptions,
			Text: fmt.Sprintf("at most %d subscriptions per connection", n.cfg.MaxSubscriptions)}).Frame()
	}
	return nil
}

// indexTopic subscribes c to topic. The caller holds s.mu.
func (n *Node) indexTopic(c *gateway.Conn, s *session, topic string) {
	s.topics = append(s.topics, topic)
	n.hub.Subscribe(s.reg.App, topic, c)
}

// unsubscribe handles UNSUBSCRIBE, in order with the connection's
// subscriptions.
func (n *Node) unsubscribe(c *gateway.Conn, s *session, f *protocol.Frame) {
	if !auth.ValidName(f.Topic) { // nothing to unsubscribe from, and nothing long to queue
		_ = c.SendFrame((&protocol.Error{ID: f.ID, Code: protocol.CodeBadName, Text: "topic must be 1-128 printable bytes without spaces"}).Frame())
		return
	}
	n.serialize(c, s, f.ID, func() {
		s.mu.Lock()
		if i := slices.Index(s.topics, f.Topic); i >= 0 && !s.released {
			s.topics = slices.Delete(s.topics, i, i+1)
			n.hub.Unsubscribe(s.reg.App, f.Topic, c)
		}
		s.mu.Unlock()
		_ = c.SendFrame(&protocol.Frame{Type: protocol.TypeReply, ID: f.ID})
	}, false)
}

// joinBroadcast indexes c among its app's connections, after CONNECTED.
// A client that tracks the broadcast stream puts a resume position for "b"
// in CONNECT (without an epoch the first time): with history on, it then
// gets a REPLY with id 0 and stream "b" that tells its position, preceded
// by what it missed if its position had an epoch (recovered off the event
// loop).
func (n *Node) joinBroadcast(c *gateway.Conn, s *session, resume []protocol.Position) {
	join := func() { n.hub.JoinApp(s.reg.App, c) }
	i := slices.IndexFunc(resume, func(p protocol.Position) bool { return p.Stream == broadcastStream })
	if i >= 0 && resume[i].Epoch != "" && n.cfg.HistorySize > 0 {
		p := resume[i]
		n.serialize(c, s, 0, func() {
			n.recoverStream(c, s, 0, broadcastStream, p.Epoch, p.Seq, nil, join)
		}, true)
		return
	}
	s.mu.Lock()
	joined := !s.released
	if joined {
		join()
	}
	s.mu.Unlock()
	if joined && i >= 0 {
		_ = c.SendFrame(n.positionReply(0, s.reg.App, broadcastStream, resume[i].Epoch != ""))
	}
}

// maxQueuedOps bounds the subscription requests a connection may have
// waiting behind a recovery.
const maxQueuedOps = 256

// serialize runs a connection's subscription operations in the order they
// arrived: op runs now on the caller's goroutine unless an earlier one is
// still running; async ops (recoveries, which read the store) run on a
// goroutine, and what arrives meanwhile queues behind them.
func (n *Node) serialize(c *gateway.Conn, s *session, id uint32, op func(), async bool) {
	s.mu.Lock()
	if s.busy {
		if len(s.ops) >= maxQueuedOps {
			s.mu.Unlock()
			_ = c.SendFrame((&protocol.Error{ID: id, Code: protocol.CodeTooManySubscriptions,
				Text: fmt.Sprintf("more than %d subscription requests waiting", maxQueuedOps)}).Frame())
			return
		}
		s.ops = append(s.ops, op)
		s.mu.Unlock()
		return
	}
	if !async {
		s.mu.Unlock()
		op()
		return
	}
	s.busy = true
	s.mu.Unlock()
	n.wg.Add(1)
	go n.runOps(s, op)
}

// runOps runs op, then the operations queued behind it, then marks s not
// busy. The caller set s.busy and called n.wg.Add(1).
func (n *Node) runOps(s *session, op func()) {
	defer n.wg.Done()
	for {
		op()
		s.mu.Lock()
		if len(s.ops) == 0 {
			s.busy = false
			s.mu.Unlock()
			return
		}
		op = s.ops[0]
		s.ops[0] = nil
		s.ops = s.ops[1:]
		s.mu.Unlock()
	}
}
