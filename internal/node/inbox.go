package node

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/protocol"
)

// User inboxes are durable: a push is appended to the user's stream in the
// store before it is sent (store-then-send), and a device that connects
// receives everything after its ACK position first, then live messages.
//
// Order without locks: a push hands its message, with its seq, to the
// hub, which routes a user's inbox in sequence order to the connections
// joined to it. A connecting device prepares the inbox in the hub, reads
// the store from its position, and joins at the position it read up to:
// what was pushed meanwhile is held by the hub and follows (see hub's
// "Ordered delivery").

// catchUpPage is how many stored messages a catch-up reads and sends at a time.
const catchUpPage = 256

// ErrStore is returned (wrapped) when the store fails an append: the message
// was not accepted.
var ErrStore = errors.New("node: store unavailable")

// inboxStream is the store stream of a user's inbox.
func inboxStream(app, user string) string { return app + "/u:" + user }

// Accepted is the outcome of a durable push.
type Accepted struct {
	ID          string // message id
	Seq         uint64 // sequence number in the user's inbox
	Duplicate   bool   // the id was already stored: nothing new was stored or sent
	Connections int    // connections written to now
	// Held says that the app's deliveries are paused (the pause switch):
	// the message is stored and goes out when they resume.
	Held bool
}

// inboxPush is the PUSH frame of a stored inbox message.
func inboxPush(user, epoch string, m store.Message) *protocol.Encoded {
	return pushOf(userStream(user), epoch, m)
}

// storedMessage is m as an inbox stores it, accepted at now.
func (n *Node) storedMessage(m Message, now time.Time) store.Message {
	sm := store.Message{ID: m.ID, Payload: m.Payload, Time: now}
	if ttl := m.TTL; ttl > 0 {
		sm.Expires = now.Add(ttl)
	} else if n.cfg.MessageTTL > 0 {
		sm.Expires = now.Add(n.cfg.MessageTTL)
	}
	return sm
}

// pushInbox stores m in user's inbox and hands it to the hub for the
// user's connections here.
func (n *Node) pushInbox(ctx context.Context, app, user string, m Message) (Accepted, error) {
	now := n.cfg.Now()
	sm := n.storedMessage(m, now)
	// Not the caller's context: an append abandoned half way may still be
	// stored, and then it must also be sent to the devices online now, or
	// they would only get it when they reconnect.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	res, err := n.store.Append(actx, inboxStream(app, user), sm)
	if err != nil {
		return Accepted{}, fmt.Errorf("%w: append to %s: %v", ErrStore, user, err)
	}
	a := Accepted{ID: m.ID, Seq: res[0].Seq, Duplicate: res[0].Duplicate}
	if a.Duplicate {
		a.Connections = n.resend(actx, app, user, res[0])
		return a, nil
	}
	sm.Seq = a.Seq
	if n.paused(app) {
		a.Held = true // the hub routes it when the app is resumed
		n.accepted(hub.Stream{Kind: hub.Inbox, App: app, Name: user}, nil)
		return a, nil
	}
	e := inboxPush(user, res[0].Epoch, sm)
	st := hub.Stream{Kind: hub.Inbox, App: app, Name: user}
	n.accepted(st, e)
	a.Connections, _ = n.hub.DeliverUser(app, user, res[0].Epoch, hub.Ordered{Seq: a.Seq, Frame: e})
	n.relay(st, e)
	return a, nil
}

// resend hands the stored message of a duplicate push to the hub again. A
// push retried with the same id is a duplicate, but the first attempt may
// have failed after its append reached the store (a disk error, a
// timeout), and then it was never routed: the hub routes it now if it has
// not (it drops a repeat). It returns how many connections took frames.
func (n *Node) resend(ctx context.Context, app, user string, a store.Appended) int {
	if n.on(switches.Pause, app) {
		return 0 // routed with the rest when the app is resumed
	}
	if len(n.hub.UserConns(app, user)) == 0 && n.broker == nil {
		return 0
	}
	msgs, epoch, err := n.store.Range(ctx, inboxStream(app, user), a.Seq-1, 1)
	if err != nil || len(msgs) == 0 || msgs[0].Seq != a.Seq {
		return 0 // expired or trimmed meanwhile, or the store failed: the devices get what is held when they reconnect
	}
	e := inboxPush(user, epoch, msgs[0])
	st := hub.Stream{Kind: hub.Inbox, App: app, Name: user}
	n.stamp(st, e) // its API call is answered now, though not counted as accepted again
	n.relay(st, e) // other nodes may not have it either
	conns, fresh := n.hub.DeliverUser(app, user, epoch, hub.Ordered{Seq: a.Seq, Frame: e})
	if !fresh {
		return 0 // they had it
	}
	return conns
}

// catchUpBudget bounds the bytes of stored messages one catch-up round
// writes, well under any outbound limit: a device with a large backlog gets
// it round by round, the next round once it has acknowledged half of the
// last, instead of overflowing its connection and reconnecting forever.
const catchUpBudget = 256 << 10

// catchUpJob runs a catch-up round on the readers.
func (n *Node) catchUpJob(c Conn, s *session, after uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	if err := n.catchUp(ctx, c, s, after); err != nil {
		n.log.Warn("catch-up failed", "conn_id", c.ID(), "user", s.reg.User, "err", err)
		c.Close(protocol.NewDisconnect(protocol.DisconnectServerError))
	}
}

// catchUp sends c what its device has not acknowledged, in order, from
// after (0: the device's stored position), up to catchUpBudget bytes. When
// it has sent everything the store holds and the hub has routed, it joins
// c to the inbox, so live messages follow; a larger backlog waits for the
// device's ACKs (see continueCatchUp), and live messages meanwhile are
// only stored and reach c in a later round.
func (n *Node) catchUp(ctx context.Context, c Conn, s *session, after uint64) error {
	app, user := s.reg.App, s.reg.User
	stream := inboxStream(app, user)
	st := hub.Stream{Kind: hub.Inbox, App: app, Name: user}
	n.ready(ctx, st) // other nodes' pushes reach this one from now on
	n.prepare(st)    // before the first read: what is pushed from now on is held
	if after == 0 {
		var err error
		if after, err = n.store.Cursor(ctx, stream, s.reg.Device); err == nil {
			after, err = n.skipPoison(ctx, stream, s.reg.Device, after)
		}
		if err != nil {
			n.abandon(st)
			return err
		}
	}
	budget := catchUpBudget
	first := after + 1
	for {
		msgs, epoch, err := n.store.Range(ctx, stream, after, catchUpPage)
		if err != nil && !errors.Is(err, store.ErrTrimmed) {
			n.abandon(st)
			return err
		}
		frames := make([]*protocol.Encoded, 0, len(msgs))
		for _, m := range msgs {
			if budget <= 0 {
				break
			}
			budget -= len(m.Payload) + 64
			frames = append(frames, inboxPush(user, epoch, m))
		}
		if len(frames) > 0 {
			if err := c.Send(frames...); err != nil {
				n.abandon(st)
				return nil // the connection went away; its device keeps its position
			}
			n.caughtUp.Add(uint64(len(frames)))
			after = msgs[len(frames)-1].Seq
		}
		if len(frames) < len(msgs) || (budget <= 0 && len(msgs) == catchUpPage) {
			// More may be waiting: continue when the device acknowledges.
			n.abandon(st)
			s.mu.Lock()
			s.backlog = after
			s.resumeAt = first + (after-first)/2 // an ACK of half the round is enough
			s.mu.Unlock()
			return nil
		}
		if len(msgs) == catchUpPage {
			continue
		}
		// Everything the store held after after when read: join there.
		pos, ok := n.join(c, s, st, hub.Position{Epoch: epoch, Seq: after}, hub.JoinBehind, nil)
		if !ok && pos.Epoch != epoch {
			// The hub routes another epoch than the store's now (the
			// stream started over): take what comes live.
			pos, ok = n.join(c, s, st, hub.Position{Epoch: epoch, Seq: after}, hub.JoinLive, nil)
		}
		if ok {
			s.mu.Lock()
			s.backlog = 0
			s.mu.Unlock()
			return nil
		}
		if len(msgs) == 0 {
			after = pos.Seq // the hub routed what the store no longer holds
		}
	}
}

// redelivery tracks, per device, how many connections in a row started
// from the same position: a device that never acknowledges the message at
// its head (a client that crashes on it, say) would otherwise receive it
// forever.
type redelivery struct {
	mu    sync.Mutex
	m     map[string]redeliveryEntry // stream + "\x00" + device
	count atomic.Int64               // len(m), read without the lock
}

type redeliveryEntry struct {
	cursor uint64
	count  int
}

// forget drops key's entry. Every ACK calls it; when no device is being
// counted it takes no lock.
func (r *redelivery) forget(key string) {
	if r.count.Load() == 0 {
		return
	}
	r.mu.Lock()
	delete(r.m, key)
	r.count.Store(int64(len(r.m)))
	r.mu.Unlock()
}

// skipPoison counts a catch-up from cursor for device; past the limit, the
// first message after cursor is marked undeliverable for the device: its
// position moves past it, and it is counted. It returns the position to
// start from.
func (n *Node) skipPoison(ctx context.Context, stream, device string, cursor uint64) (uint64, error) {
	limit := n.cfg.MaxRedeliveries
	if limit <= 0 {
		return cursor, nil
	}
	key := stream + "\x00" + device
	if _, _, last, err := n.store.Head(ctx, stream); err != nil || last <= cursor {
		n.redeliver.forget(key) // nothing waiting: nothing to count
		return cursor, err
	}
	n.redeliver.mu.Lock()
	e := n.redeliver.m[key]
	if e.cursor == cursor {
		e.count++
	} else {
		e = redeliveryEntry{cursor: cursor, count: 1}
	}
	over := e.count > limit
	if over {
		delete(n.redeliver.m, key)
	} else {
		n.redeliver.m[key] = e
	}
	n.redeliver.count.Store(int64(len(n.redeliver.m)))
	n.redeliver.mu.Unlock()
	if !over {
		return cursor, nil
	}
	head, _, err := n.store.Range(ctx, stream, cursor, 1)
	if err != nil && !errors.Is(err, store.ErrTrimmed) {
		return cursor, err
	}
	if len(head) == 0 {
		return cursor, nil
	}
	if err := n.store.Ack(ctx, stream, device, head[0].Seq); err != nil {
		return cursor, err
	}
	n.undeliverable.Add(1)
	n.log.Warn("message undeliverable to device", "stream", stream, "device", device, "seq", head[0].Seq, "id", head[0].ID, "attempts", limit)
	// Remembered for Status while the message would have been kept.
	mark := store.Message{ID: head[0].ID, Time: n.cfg.Now(), Expires: head[0].Expires}
	if _, err := n.store.Append(ctx, undeliverableStream(stream, device), mark); err != nil {
		n.log.Warn("undeliverable mark not stored", "stream", stream, "device", device, "err", err)
	}
	return head[0].Seq, nil
}

// continueCatchUp runs the next catch-up round of a device that has
// acknowledged enough of the previous one.
func (n *Node) continueCatchUp(c Conn, s *session, after uint64) {
	n.readers.submit(func() {
		s.mu.Lock()
		current := s.backlog
		s.mu.Unlock()
		if current != after || c.Closed() {
			return // another round ran, or the connection is gone
		}
		n.catchUpJob(c, s, after)
	})
}

// ack records a device's position in its user's inbox.
func (n *Node) ack(c Conn, s *session, f *protocol.Frame) {
	if f.Stream != userStream(s.reg.User) || !s.named {
		return // topic positions are the client's; other users' streams are not its to ack
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream := inboxStream(s.reg.App, s.reg.User)
	if _, _, last, err := n.store.Head(ctx, stream); err != nil || f.Seq > last {
		// An ACK past the end would make the device skip messages not yet
		// written: refuse it.
		n.log.Info("ack past the end of the inbox ignored", "user", s.reg.User, "device", s.reg.Device, "seq", f.Seq, "last", last)
		return
	}
	if err := n.store.Ack(ctx, stream, s.reg.Device, f.Seq); err != nil {
		n.log.Warn("ack not stored", "user", s.reg.User, "device", s.reg.Device, "err", err)
		return
	}
	n.redeliver.forget(stream + "\x00" + s.reg.Device) // progress: start counting again
	s.mu.Lock()
	backlog, resumeAt := s.backlog, s.resumeAt
	if backlog != 0 && f.Seq >= resumeAt {
		s.resumeAt = backlog + 1 // once per round
	}
	s.mu.Unlock()
	if backlog != 0 && f.Seq >= resumeAt {
		n.continueCatchUp(c, s, backlog)
	}
}

// Unread returns the last sequence of user's inbox and device's position;
// their difference counts expired messages too.
func (n *Node) Unread(ctx context.Context, app, user, device string) (last, acked uint64, err error) {
	if err := n.switchedOff(switches.UnreadOff, app); err != nil {
		return 0, 0, err
	}
	stream := inboxStream(app, user)
	_, _, last, err = n.store.Head(ctx, stream)
	if err != nil {
		return 0, 0, err
	}
	acked, err = n.store.Cursor(ctx, stream, device)
	return last, acked, err
}

// undeliverableStream holds, per device, the ids of the inbox messages
// skipped as undeliverable for it. "\x00" cannot occur in a user name, so
// it is no inbox's name.
func undeliverableStream(inbox, device string) string {
	return inbox + "\x00undeliverable\x00" + device
}

// Message states reported by Status.
const (
	StateStored        = "stored"        // held and not expired; not handed to the device yet
	StateDelivered     = "delivered"     // written to the device's current connection; not acknowledged yet
	StateAcked         = "acked"         // the device's position is at or after it
	StateUndeliverable = "undeliverable" // skipped for the device after max_redeliveries
	StateGone          = "gone"          // expired, removed, or never stored
)

// Status reports the state of message id in user's inbox, for device when
// device is not empty.
func (n *Node) Status(ctx context.Context, app, user, id, device string) (state string, seq uint64, err error) {
	stream := inboxStream(app, user)
	seq, ok, err := n.store.Lookup(ctx, stream, id)
	if err != nil || !ok {
		return StateGone, 0, err
	}
	if device == "" {
		return StateStored, seq, nil
	}
	if _, skipped, err := n.store.Lookup(ctx, undeliverableStream(stream, device), id); err != nil {
		return "", 0, err
	} else if skipped {
		return StateUndeliverable, seq, nil
	}
	acked, err := n.store.Cursor(ctx, stream, device)
	if err != nil {
		return "", 0, err
	}
	switch {
	case acked >= seq:
		return StateAcked, seq, nil
	case n.sentTo(app, user, device, seq):
		return StateDelivered, seq, nil
	}
	return StateStored, seq, nil
}

// sentTo reports whether the inbox message seq (stored, so at or below
// the inbox's head) was written to a live connection of device here: a
// connection is indexed for live messages once its catch-up has sent
// everything up to the head, and gets every later one.
func (n *Node) sentTo(app, user, device string, seq uint64) bool {
	for _, hc := range n.hub.UserConns(app, user) {
		if c, ok := hc.(Conn); ok && !c.Closed() {
			if s, ok := c.Session().(*session); ok && s.reg.Device == device {
				return true
			}
		}
	}
	return false
}

// RunExpiry removes expired messages every interval, and trims topic and
// broadcast history to its size when publishes ask for it, until ctx is
// done.
func (n *Node) RunExpiry(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case key := <-n.trims:
			if err := n.store.Trim(ctx, key, n.cfg.HistorySize, n.cfg.HistoryTTL); err != nil && ctx.Err() == nil {
				n.log.Warn("trim history", "stream", key, "err", err)
			}
		case <-t.C:
			if removed, err := n.store.Expire(ctx); err != nil && ctx.Err() == nil {
				n.log.Warn("expire", "err", err)
			} else if removed > 0 {
				n.log.Debug("expired messages removed", "count", removed)
			}
		}
	}
}
