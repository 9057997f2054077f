package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/protocol"
)

// Topic and broadcast history. With history on (Config.HistorySize > 0) a
// message published to a topic or broadcast to an app is appended once to
// the store stream of that topic (app/t:<topic>) or app (app/b), then
// handed to the hub with its position; its PUSH frames carry the epoch and
// seq. History is bounded: at most HistorySize messages per stream (Trim,
// in the background) and HistoryTTL of age (each message expires then).
//
// A client that resubscribes with the position it had (epoch, seq) is sent
// what it missed, then a REPLY that says Recovered, then live messages; if
// history no longer holds the position, or the epoch changed, it gets a REPLY
// without Recovered and only live messages.
//
// Order without locks: concurrent publishes to a stream are appended in
// some order (the store assigns their seqs) and the hub routes them in
// that order, whatever order they reach it in. A recovering subscriber
// prepares the stream in the hub, reads the history, and joins at the
// position it read up to (see hub's "Ordered delivery"); a plain one joins
// where the hub stands, and its REPLY says where that is.

// Published is the outcome of a publish or broadcast.
type Published struct {
	ID          string // message id
	Seq         uint64 // sequence number in the topic or broadcast stream; 0 with history off
	Duplicate   bool   // the id was already in history: nothing new was stored or sent
	Held        bool   // stored, and held until the app's paused deliveries resume
	Subscribers int    // local connections the message was queued for
}

// historyStream is the store stream of a topic or broadcast stream.
func historyStream(app, stream string) string { return app + "/" + stream }

// topicOf is the hub stream of a topic, or of app's broadcasts when topic
// is empty.
func topicOf(app, topic string) hub.Stream {
	if topic == "" {
		return hub.Stream{Kind: hub.Broadcast, App: app}
	}
	return hub.Stream{Kind: hub.Topic, App: app, Name: topic}
}

// Publish stores m in topic's history (if on), then hands it to the hub
// for the local subscribers of topic.
func (n *Node) Publish(ctx context.Context, app, topic string, m Message) (Published, error) {
	return n.publish(ctx, topicOf(app, topic), m)
}

// Broadcast stores m in app's broadcast history (if on), then hands it to
// the hub for every connection of app.
func (n *Node) Broadcast(ctx context.Context, app string, m Message) (Published, error) {
	return n.publish(ctx, topicOf(app, ""), m)
}

func (n *Node) publish(ctx context.Context, st hub.Stream, m Message) (Published, error) {
	m.ID = n.messageID(m.ID)
	key, stream := storeStream(st)
	if n.cfg.HistorySize <= 0 || n.on(switches.HistoryOff, st.App) {
		if n.on(switches.Pause, st.App) {
			n.deg.queriesOff.Add(1)
			return Published{}, fmt.Errorf("%w: app %q is paused and this message would not be stored (history off)", ErrSwitchedOff, st.App)
		}
		e := n.pushFrame(stream, m)
		n.accepted(st, e)
		n.relay(st, e)
		if st.Kind == hub.Broadcast {
			return Published{ID: m.ID, Subscribers: n.hub.Broadcast(st.App, e)}, nil
		}
		return Published{ID: m.ID, Subscribers: n.hub.Publish(st.App, st.Name, e)}, nil
	}
	now := n.cfg.Now()
	// History age is the stream's, not the message's: a message that
	// expired before its neighbours would be a hole a recovery cannot tell
	// from lost history.
	sm := store.Message{ID: m.ID, Payload: m.Payload, Time: now, Expires: now.Add(n.cfg.HistoryTTL)}
	// Not the caller's context: an append abandoned half way may still be
	// stored, and then it must also be sent.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	res, err := n.store.Append(actx, key, sm)
	if err != nil {
		return Published{}, fmt.Errorf("%w: append to %s: %v", ErrStore, stream, err)
	}
	r := res[0]
	p := Published{ID: m.ID, Seq: r.Seq, Duplicate: r.Duplicate}
	if p.Duplicate {
		return p, nil
	}
	sm.Seq = r.Seq
	if n.paused(st.App) {
		p.Held = true // the hub routes it when the app is resumed
		n.accepted(st, nil)
		n.maybeTrim(key, r.Seq)
		return p, nil
	}
	o := hub.Ordered{Seq: r.Seq, Frame: pushOf(stream, r.Epoch, sm)}
	n.accepted(st, o.Frame)
	if st.Kind == hub.Broadcast {
		p.Subscribers = n.hub.BroadcastAt(st.App, r.Epoch, o)
	} else {
		p.Subscribers = n.hub.PublishAt(st.App, st.Name, r.Epoch, o)
	}
	n.relay(st, o.Frame)
	n.maybeTrim(key, r.Seq)
	return p, nil
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

// subscribe handles SUBSCRIBE: a plain subscription joins where the hub
// stands (on the event loop when the hub knows the topic), a recovery (a
// SUBSCRIBE with an epoch, history on) reads the history on the readers.
func (n *Node) subscribe(c Conn, s *session, f *protocol.Frame) {
	if !auth.ValidName(f.Topic) {
		_ = c.SendFrame(errorFrame(f.ID, protocol.CodeBadName, "topic must be 1-128 printable bytes without spaces"))
		return
	}
	if !(auth.Claims{Topics: s.allowed}).TopicAllowed(f.Topic) {
		_ = c.SendFrame(errorFrame(f.ID, protocol.CodeForbidden, fmt.Sprintf("token does not allow topic %q", f.Topic)))
		return
	}
	st := topicOf(s.reg.App, f.Topic)
	if f.Epoch != "" && n.cfg.HistorySize > 0 {
		n.serialize(c, s, f.ID, func() {
			if !n.refuseTopic(c, s, f) {
				n.want(st) // dropped by unsubscribe or release, or if it does not join
				n.recoverStream(c, s, f.ID, st, f.Epoch, f.Seq)
			}
		}, true)
		return
	}
	n.serialize(c, s, f.ID, func() {
		if n.refuseTopic(c, s, f) {
			return
		}
		n.want(st) // a subscribed topic's interest is dropped by unsubscribe or release
		if n.cfg.HistorySize <= 0 {
			n.joinUnordered(c, s, st)
			reply := &protocol.Frame{Type: protocol.TypeReply, ID: f.ID, Stream: topicStream(f.Topic)}
			if f.Epoch != "" {
				reply.Reason = "this server keeps no history"
			}
			_ = c.SendFrame(reply)
			return
		}
		n.joinLive(c, s, st, n.positionReply(c, f.ID, topicStream(f.Topic)))
	}, false)
}

// refuseTopic answers a SUBSCRIBE that must not subscribe (already
// subscribed, at the limit) and reports whether it did.
func (n *Node) refuseTopic(c Conn, s *session, f *protocol.Frame) bool {
	s.mu.Lock()
	refusal := n.topicRefusal(s, f)
	released := s.released
	s.mu.Unlock()
	if refusal != nil && !released {
		_ = c.SendFrame(refusal)
	}
	return refusal != nil || released
}

// joinUnordered joins c to st with history off: messages carry no
// position, and the hub routes them as they come.
func (n *Node) joinUnordered(c Conn, s *session, st hub.Stream) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		return
	}
	if st.Kind == hub.Broadcast {
		n.hub.JoinApp(st.App, c)
		return
	}
	n.hub.Subscribe(st.App, st.Name, c)
	s.topics = append(s.topics, st.Name)
}

// positionReply returns the function that sends the REPLY to request id
// with the position a subscriber joined at.
func (n *Node) positionReply(c Conn, id uint32, stream string) func(hub.Position) {
	return func(p hub.Position) {
		_ = c.SendFrame(&protocol.Frame{Type: protocol.TypeReply, ID: id, Stream: stream, Epoch: p.Epoch, Seq: p.Seq})
	}
}

// recoverStream sends c what it missed of st since (epoch, after), then
// joins it at the position it read up to with the REPLY (Recovered), or,
// when that cannot be recovered, joins it live with a REPLY that says why.
// It reports whether c joined (false: it was released, or failed).
func (n *Node) recoverStream(c Conn, s *session, id uint32, st hub.Stream, epoch string, after uint64) (joined bool) {
	_, stream := storeStream(st)
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	n.ready(ctx, st) // other nodes' messages reach this one from now on
	n.prepare(st)    // before the history is read: what is published from now on is held
	s.mu.Lock()
	allowance := n.replayAllowance(s, n.cfg.Now())
	s.mu.Unlock()
	frames, reply, cost, err := n.replay(ctx, st.App, stream, epoch, after, allowance)
	if err != nil {
		n.log.Warn("recovery failed", "conn_id", c.ID(), "stream", stream, "err", err)
		reply = &protocol.Frame{Type: protocol.TypeReply, Stream: stream, Reason: "history unavailable"}
		frames = nil
	}
	reply.ID = id
	send := func(p hub.Position) {
		r := *reply
		r.Epoch, r.Seq = p.Epoch, p.Seq
		_ = c.SendFrame(&r)
	}
	if !reply.Recovered {
		at := hub.Position{Epoch: reply.Epoch, Seq: reply.Seq} // the head, when it was read
		if !n.tryJoin(c, s, st, at, hub.JoinLive, send) {
			// Neither the store nor the hub knows where the stream
			// stands: the client reconnects and tries again.
			n.abandon(st)
			n.unwantTopic(st)
			c.Fail(&protocol.Error{ID: id, Code: protocol.CodeInternal, Text: "history unavailable; reconnect"},
				protocol.NewDisconnect(protocol.DisconnectServerError))
			return false
		}
		return n.joinedTopic(s, st)
	}
	// Sent before c joins: live messages can only follow.
	if len(frames) > 0 {
		_ = c.Send(frames...)
	}
	at := hub.Position{Epoch: reply.Epoch, Seq: reply.Seq}
	for {
		pos, ok := n.join(c, s, st, at, hub.JoinBehind, send)
		if ok {
			break
		}
		// Published and routed since the history was read: read it too.
		more, err := n.readRange(ctx, st, at, pos.Seq)
		if err != nil || pos.Epoch != at.Epoch {
			n.tryJoin(c, s, st, at, hub.JoinLive, send)
			break
		}
		for _, f := range more {
			cost += len(f.Frame().Payload) + 64
		}
		_ = c.Send(more...)
		at.Seq = pos.Seq
	}
	s.mu.Lock()
	if !s.released && cost > 0 {
		n.chargeReplay(s, cost, n.cfg.Now())
	}
	s.mu.Unlock()
	if n.log.Enabled(context.Background(), slog.LevelDebug) {
		n.log.Debug("recovery", "conn_id", c.ID(), "stream", stream, "from", after, "to", at.Seq, "recovered", reply.Recovered, "reason", reply.Reason)
	}
	return n.joinedTopic(s, st)
}

// joinedTopic reports whether s is joined to st (a topic; any other
// stream counts as joined while s is not released).
func (n *Node) joinedTopic(s *session, st hub.Stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.released && (st.Kind != hub.Topic || slices.Contains(s.topics, st.Name))
}

// readRange reads the PUSH frames of st after at up to and including to.
func (n *Node) readRange(ctx context.Context, st hub.Stream, at hub.Position, to uint64) ([]*protocol.Encoded, error) {
	_, msgs, err := n.Fill(ctx, st, at.Seq, to+1)
	if err != nil {
		return nil, err
	}
	out := make([]*protocol.Encoded, len(msgs))
	for i, m := range msgs {
		out[i] = m.Frame
	}
	return out, nil
}

// joinBroadcast joins c to its app's broadcasts, after CONNECTED. A client
// that tracks the broadcast stream puts a resume position for "b" in
// CONNECT (without an epoch the first time): with history on, it then
// gets a REPLY with id 0 and stream "b" that tells its position, preceded
// by what it missed if its position had an epoch (recovered on the
// readers).
func (n *Node) joinBroadcast(c Conn, s *session, resume []protocol.Position) {
	st := topicOf(s.reg.App, "")
	if n.cfg.HistorySize <= 0 {
		n.joinUnordered(c, s, st)
		if slices.ContainsFunc(resume, func(p protocol.Position) bool { return p.Stream == broadcastStream }) {
			_ = c.SendFrame(&protocol.Frame{Type: protocol.TypeReply, Stream: broadcastStream})
		}
		return
	}
	i := slices.IndexFunc(resume, func(p protocol.Position) bool { return p.Stream == broadcastStream })
	if i >= 0 && resume[i].Epoch != "" {
		p := resume[i]
		n.serialize(c, s, 0, func() { n.recoverStream(c, s, 0, st, p.Epoch, p.Seq) }, true)
		return
	}
	var reply func(hub.Position)
	if i >= 0 {
		reply = n.positionReply(c, 0, broadcastStream)
	}
	n.serialize(c, s, 0, func() { n.joinLive(c, s, st, reply) }, false)
}

// replay returns the stored messages of stream after (epoch, after) up to
// its head as PUSH frames, and the REPLY that ends them: Recovered, or not
// with the reason.
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
		t := n.tun.Load()
		return fmt.Sprintf("replay limit: this connection may recover %d bytes at once and %d bytes per second", t.ReplayBurst, t.ReplayRate)
	}
	limit := min(n.cfg.ReplayBudget, allowance)
	reason, historyBack := n.recoveryRefusal(app)
	if reason != "" {
		return fail(reason)
	}
	switch {
	case epoch != ep:
		return fail("epoch changed: the server's history was reset")
	case after > last:
		return fail("position is beyond the end of the stream")
	case after+1 < first:
		return fail("history no longer holds the position")
	}
	if !historyBack.IsZero() && after < last {
		// Messages sent live only while history was off are not in the
		// history: recover only from a position stored since.
		if after == 0 {
			return fail("history was switched off since this position")
		}
		at, _, err := n.store.Range(ctx, key, after-1, 1)
		if err != nil && !errors.Is(err, store.ErrTrimmed) {
			return nil, nil, 0, err
		}
		if len(at) == 0 || at[0].Seq != after || at[0].Time.Before(historyBack) {
			return fail("history was switched off since this position")
		}
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
			if after >= last {
				break // appended since the head was read: the join brings it
			}
			if m.Seq != after+1 {
				return fail("history no longer holds the position") // expired
			}
			if budget -= len(m.Payload) + 64; n.cfg.ReplayBudget-budget > limit {
				return fail(tooMuch(n.cfg.ReplayBudget - budget))
			}
			e.frames = append(e.frames, pushOf(stream, ep, m))
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
	t := n.tun.Load()
	owed := s.replayed - now.UnixNano()
	if owed <= 0 {
		return t.ReplayBurst
	}
	return max(0, t.ReplayBurst-int(owed*int64(t.ReplayRate)/int64(time.Second)))
}

// chargeReplay takes cost bytes from s's replay bucket. The caller holds
// s.mu and checked cost against replayAllowance.
func (n *Node) chargeReplay(s *session, cost int, now time.Time) {
	s.replayed = max(s.replayed, now.UnixNano()) + int64(cost)*int64(time.Second)/int64(n.tun.Load().ReplayRate)
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

// topicRefusal returns the frame that answers a SUBSCRIBE without
// subscribing: a plain REPLY if s is subscribed already, an ERROR at the
// subscription limit; nil otherwise. The caller holds s.mu.
func (n *Node) topicRefusal(s *session, f *protocol.Frame) *protocol.Frame {
	limit := n.tun.Load().MaxSubscriptions
	switch {
	case slices.Contains(s.topics, f.Topic):
		return &protocol.Frame{Type: protocol.TypeReply, ID: f.ID}
	case len(s.topics) >= limit:
		return (&protocol.Error{ID: f.ID, Code: protocol.CodeTooManySubscriptions,
			Text: fmt.Sprintf("at most %d subscriptions per connection", limit)}).Frame()
	}
	return nil
}

// unsubscribe handles UNSUBSCRIBE, in order with the connection's
// subscriptions.
func (n *Node) unsubscribe(c Conn, s *session, f *protocol.Frame) {
	if !auth.ValidName(f.Topic) { // nothing to unsubscribe from, and nothing long to queue
		_ = c.SendFrame(errorFrame(f.ID, protocol.CodeBadName, "topic must be 1-128 printable bytes without spaces"))
		return
	}
	n.serialize(c, s, f.ID, func() {
		s.mu.Lock()
		if i := slices.Index(s.topics, f.Topic); i >= 0 && !s.released {
			s.topics = slices.Delete(s.topics, i, i+1)
			n.hub.Unsubscribe(s.reg.App, f.Topic, c)
			n.unwant(topicOf(s.reg.App, f.Topic))
		}
		s.mu.Unlock()
		_ = c.SendFrame(&protocol.Frame{Type: protocol.TypeReply, ID: f.ID})
	}, false)
}
