package node

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/herald-push/herald/internal/auth"
	"github.com/herald-push/herald/internal/gateway"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/protocol"
)

// session is what the node keeps per authenticated connection.
//
// Joining a stream is owned by whoever does it: the event loop for a live
// join, a job on the readers for one that reads the store first. The
// owner prepares the stream in the hub, and later joins it or abandons the
// preparation, under mu, after checking released: so release, which also
// takes mu, only leaves what was joined.
type session struct {
	reg     registry.Session // the registry holds a pointer to it
	allowed []string         // topic patterns the token allows
	named   bool             // the client gave a device id: it has an inbox position
	counted *appCount        // the app's connection count holds this session (until released)

	mu       sync.Mutex
	released bool     // removed from hub and registry; nothing more is joined
	topics   []string // joined topics
	backlog  uint64   // last seq of an unfinished catch-up round; 0 when caught up
	resumeAt uint64   // an ACK of this seq starts the next round
	busy     bool     // a job is running the subscription operations (serialize)
	ops      []func() // subscription operations waiting behind it; at most maxQueuedOps
	replayed int64    // the replay budget's theoretical arrival time, unix nanoseconds (see replayAllowance)
}

// OnFrame implements gateway.Handler.
func (n *Node) OnFrame(gc *gateway.Conn, f *protocol.Frame) { n.onFrame(gc, f) }

// OnClose implements gateway.Handler.
func (n *Node) OnClose(gc *gateway.Conn, _ protocol.Disconnect) {
	if s, ok := gc.Session().(*session); ok {
		n.release(gc, s)
	}
}

func (n *Node) onFrame(c Conn, f *protocol.Frame) {
	if f.Type == protocol.TypeConnect {
		n.connect(c, f)
		return
	}
	s, _ := c.Session().(*session)
	if s == nil {
		return
	}
	switch f.Type {
	case protocol.TypeSubscribe:
		n.subscribe(c, s, f)
	case protocol.TypeUnsubscribe:
		n.unsubscribe(c, s, f)
	case protocol.TypeAck:
		n.acks.Add(1)
		n.ack(c, s, f)
	case protocol.TypeUplink:
		n.uplinks.Add(1)
		_ = c.SendFrame(errorFrame(f.ID, protocol.CodeNotSupported, "uplink is not supported by this server"))
	case protocol.TypeDisconnect:
		c.Close(protocol.NewDisconnect(protocol.DisconnectNormal))
	default:
		_ = c.SendFrame(errorFrame(f.ID, protocol.CodeBadRequest, fmt.Sprintf("a client may not send %s", f.Type)))
	}
}

// uncount gives back s's place in its app's connection count, once. It
// runs with s.mu held (release) or before anyone else knows s (claim).
func (s *session) uncount() {
	if s.counted != nil {
		s.counted.n.Add(-1)
		s.counted = nil
	}
}

// release takes c out of every stream it joined and out of the registry.
func (n *Node) release(c Conn, s *session) {
	s.mu.Lock()
	if s.released {
		s.mu.Unlock()
		return
	}
	s.released = true
	s.uncount()
	topics := s.topics
	s.topics = nil
	s.mu.Unlock()
	for _, t := range topics {
		n.hub.Unsubscribe(s.reg.App, t, c)
		n.unwant(topicOf(s.reg.App, t))
	}
	n.hub.LeaveApp(s.reg.App, c)               // a no-op if it had not joined
	n.hub.RemoveUser(s.reg.App, s.reg.User, c) // joined to the inbox or only a member
	n.unwant(hub.Stream{Kind: hub.Inbox, App: s.reg.App, Name: s.reg.User})
	n.unwant(topicOf(s.reg.App, ""))
	if err := n.reg.Release(context.Background(), &s.reg); err != nil {
		n.log.Warn("registry release failed; the registry retries it", "conn_id", c.ID(), "user", s.reg.User, "err", err)
	}
}

func (n *Node) connect(c Conn, f *protocol.Frame) {
	if c.Session() != nil {
		_ = c.SendFrame(errorFrame(0, protocol.CodeBadRequest, "already connected"))
		return
	}
	if f.Version > protocol.Version {
		c.Fail(&protocol.Error{Code: protocol.CodeUnsupportedVersion, Text: fmt.Sprintf("protocol version %d; this server speaks %d", f.Version, protocol.Version)},
			protocol.NewDisconnect(protocol.DisconnectProtocolError))
		return
	}
	claims, err := n.verifier.Verify(f.Token)
	if err != nil {
		code := protocol.CodeBadToken
		if errors.Is(err, auth.ErrExpired) {
			code = protocol.CodeTokenExpired
		}
		n.log.Info("connect refused", "conn_id", c.ID(), "remote", c.RemoteAddr(), "err", err)
		c.Fail(&protocol.Error{Code: code, Text: err.Error()}, protocol.NewDisconnect(protocol.DisconnectAuthFailed))
		return
	}
	device := f.Device
	if device == "" {
		device = "conn-" + strconv.FormatUint(c.ID(), 10) // anonymous device: never a duplicate
	} else if !auth.ValidName(device) {
		_ = c.SendFrame(errorFrame(0, protocol.CodeBadName, "device id must be 1-128 printable bytes without spaces"))
		c.Close(protocol.NewDisconnect(protocol.DisconnectProtocolError))
		return
	}
	s := &session{
		named:   f.Device != "",
		allowed: claims.Topics,
		reg: registry.Session{
			App: claims.App, User: claims.User, Device: device, Node: n.cfg.ID,
			ConnID: c.ID(), Since: c.Opened(), Transport: c.TransportName(), Remote: c.RemoteAddr(),
		},
	}
	if e := n.connectRefusal(claims.App); e != nil {
		c.Fail(e, protocol.NewDisconnect(protocol.DisconnectUnavailable))
		return
	}
	if ac := n.appCountOf(claims.App); ac.max == 0 {
		ac.n.Add(1)
		s.counted = ac
	} else {
		if ac.n.Add(1) > ac.max {
			ac.n.Add(-1)
			n.appLimitRefused.Add(1)
			now := n.cfg.Now().UnixMilli()
			if last := ac.lastLog.Load(); now-last >= 1000 && ac.lastLog.CompareAndSwap(last, now) {
				n.log.Warn("connect refused: the app is at its connection limit", "app", claims.App, "max_connections", ac.max, "refused_total", n.appLimitRefused.Load())
			}
			c.Fail(&protocol.Error{Code: protocol.CodeAppConnectionLimit, Text: fmt.Sprintf("app %q has its %d connections on this server; retry later", claims.App, ac.max)},
				protocol.NewDisconnect(protocol.DisconnectAppConnectionLimit))
			return
		}
		s.counted = ac
	}
	if n.cfg.RemoteRegistry {
		// A claim is a round trip to the registry: not on the event loop.
		// The client waits for CONNECTED before it sends anything else.
		resume := f.Resume
		n.readers.submit(func() { n.claim(c, s, resume) })
		return
	}
	n.claim(c, s, f.Resume)
}

// claim records s in the registry (closing or refusing a duplicate), and
// finishes the CONNECT of c.
func (n *Node) claim(c Conn, s *session, resume []protocol.Position) {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	prev, hadPrev, err := n.reg.Claim(ctx, &s.reg, n.cfg.DuplicateLogin != DuplicateRefuse)
	if errors.Is(err, registry.ErrDuplicate) {
		s.uncount()
		c.Close(protocol.NewDisconnect(protocol.DisconnectDuplicateRefused))
		return
	}
	if err != nil {
		s.uncount()
		n.log.Warn("connect refused: registry claim failed", "conn_id", c.ID(), "user", s.reg.User, "err", err)
		c.Close(protocol.NewDisconnect(protocol.DisconnectServerError))
		return
	}
	if hadPrev {
		n.closeSession(prev, protocol.NewDisconnect(protocol.DisconnectReplaced))
	}
	// A member of the user's connections from now on (kicks and
	// duplicate logins find it), joined to the inbox below. In a cluster
	// the node hears the user's inbox and the app's broadcasts from the
	// other nodes while it is here.
	n.hub.AddMember(s.reg.App, s.reg.User, c)
	n.want(hub.Stream{Kind: hub.Inbox, App: s.reg.App, Name: s.reg.User})
	n.want(topicOf(s.reg.App, ""))
	c.SetSession(s)
	if !c.Authenticate() {
		n.release(c, s) // closed while we were authenticating
		return
	}
	// Streams joined live (no position to resume from) are joined before
	// CONNECTED, so that whatever is published after the client is told
	// it is connected reaches it.
	liveBroadcast := n.cfg.HistorySize > 0 && !slices.ContainsFunc(resume, func(p protocol.Position) bool { return p.Stream == broadcastStream })
	if liveBroadcast && !n.joinLiveFirst(c, s, topicOf(s.reg.App, "")) {
		return
	}
	if !s.named && !n.joinLiveFirst(c, s, hub.Stream{Kind: hub.Inbox, App: s.reg.App, Name: s.reg.User}) {
		return
	}
	_ = c.SendFrame(&protocol.Frame{
		Type:      protocol.TypeConnected,
		Session:   n.cfg.ID + "-" + strconv.FormatUint(c.ID(), 10),
		Node:      n.cfg.ID,
		Heartbeat: n.cfg.Heartbeat,
		Time:      n.cfg.Now().UnixMilli(),
	})
	if !liveBroadcast {
		n.joinBroadcast(c, s, resume) // after CONNECTED: a replay or REPLY may follow it
	}
	if s.named {
		// What the device has not acknowledged first, then live.
		n.readers.submit(func() { n.catchUpJob(c, s, 0) })
	}
}

// joinLiveFirst joins c to st where the stream stands now, on the
// caller's goroutine (reading the stream's head from the store when the
// hub does not know it), and reports whether c may go on: false when the
// store failed, and c was closed.
func (n *Node) joinLiveFirst(c Conn, s *session, st hub.Stream) bool {
	n.prepare(st)
	if n.tryJoin(c, s, st, hub.Position{}, hub.JoinLive, nil) {
		return true
	}
	return n.joinAtHead(c, s, st, nil)
}

// joinLive joins c to stream st from where the hub stands, on the caller's
// goroutine if the hub knows the stream's position, otherwise on the
// readers after reading the stream's head. reply, if not nil, is sent
// with the position before any live message (a REPLY).
func (n *Node) joinLive(c Conn, s *session, st hub.Stream, reply func(hub.Position)) {
	n.prepare(st)
	if n.tryJoin(c, s, st, hub.Position{}, hub.JoinLive, reply) {
		return
	}
	n.readers.submit(func() { n.joinAtHead(c, s, st, reply) })
}

// joinAtHead reads where st stands in the store and joins c there (st
// prepared). It reports whether c joined: false when the store failed
// (c is closed) or c was released meanwhile.
func (n *Node) joinAtHead(c Conn, s *session, st hub.Stream, reply func(hub.Position)) bool {
	ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
	defer cancel()
	n.ready(ctx, st)
	key, _ := storeStream(st)
	epoch, _, last, err := n.store.Head(ctx, key)
	if err != nil {
		n.log.Warn("stream head", "stream", key, "err", err)
		n.abandon(st)
		n.unwantTopic(st)
		c.Close(protocol.NewDisconnect(protocol.DisconnectServerError))
		return false
	}
	if !n.tryJoin(c, s, st, hub.Position{Epoch: epoch, Seq: last}, hub.JoinLive, reply) {
		n.abandon(st) // released meanwhile
		return false
	}
	return true
}

// prepare announces a join of stream st to the hub (see hub.PrepareUser).
func (n *Node) prepare(st hub.Stream) {
	switch st.Kind {
	case hub.Inbox:
		n.hub.PrepareUser(st.App, st.Name)
	case hub.Topic:
		n.hub.PrepareTopic(st.App, st.Name)
	default:
		n.hub.PrepareApp(st.App)
	}
}

// abandon undoes prepare.
func (n *Node) abandon(st hub.Stream) {
	switch st.Kind {
	case hub.Inbox:
		n.hub.AbandonUser(st.App, st.Name)
	case hub.Topic:
		n.hub.AbandonTopic(st.App, st.Name)
	default:
		n.hub.AbandonApp(st.App)
	}
}

// tryJoin joins c, prepared, to st at at as mode says, and records it in
// s; it reports whether c joined. If s was released it abandons the
// preparation and reports true (nothing more to do). With mode JoinLive
// and an empty at it reports false when the hub has no position: the
// caller reads the head and tries again. reply runs with the position
// before any live message reaches c.
func (n *Node) tryJoin(c Conn, s *session, st hub.Stream, at hub.Position, mode hub.JoinMode, reply func(hub.Position)) bool {
	_, ok := n.join(c, s, st, at, mode, reply)
	return ok
}

// join is tryJoin returning the hub's position too (to read up to when c
// is behind).
func (n *Node) join(c Conn, s *session, st hub.Stream, at hub.Position, mode hub.JoinMode, reply func(hub.Position)) (hub.Position, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.released {
		n.abandon(st)
		n.unwantTopic(st)
		return hub.Position{}, true
	}
	var (
		pos hub.Position
		ok  bool
	)
	switch st.Kind {
	case hub.Inbox:
		if pos, ok = n.hub.JoinUser(st.App, st.Name, c, at, mode); ok && reply != nil {
			reply(pos)
		}
	case hub.Topic:
		if pos, ok = n.hub.JoinTopic(st.App, st.Name, c, at, mode, reply); ok {
			s.topics = append(s.topics, st.Name)
		}
	default:
		pos, ok = n.hub.JoinAppAt(st.App, c, at, mode, reply)
	}
	return pos, ok
}

// closeSession closes the connection of session r, here or on its node
// (through the broker), and reports whether it asked for it.
func (n *Node) closeSession(r registry.Session, d protocol.Disconnect) bool {
	if r.Node == n.cfg.ID {
		return n.closeConn(r.App, r.User, r.ConnID, d)
	}
	return n.remoteClose(r, d)
}

// closeConn closes the local connection id of a user, if it is here and
// not closing already, and reports whether it did.
// CloseConn closes user's connection id here with d, and reports whether
// it was open.
func (n *Node) CloseConn(app, user string, id uint64, d protocol.Disconnect) bool {
	return n.closeConn(app, user, id, d)
}

func (n *Node) closeConn(app, user string, id uint64, d protocol.Disconnect) bool {
	for _, hc := range n.hub.UserConns(app, user) {
		if hc.ID() == id {
			if c, ok := hc.(Conn); ok && !c.Closed() {
				c.Close(d)
				return true
			}
		}
	}
	return false
}

// maxQueuedOps bounds the subscription requests a connection may have
// waiting behind a recovery.
const maxQueuedOps = 256

// serialize runs a connection's subscription operations in the order they
// arrived: op runs now on the caller's goroutine unless an earlier one is
// still running; async ops (those that read the store) run on the readers,
// and what arrives meanwhile queues behind them.
func (n *Node) serialize(c Conn, s *session, id uint32, op func(), async bool) {
	s.mu.Lock()
	if s.busy {
		if len(s.ops) >= maxQueuedOps {
			s.mu.Unlock()
			_ = c.SendFrame(errorFrame(id, protocol.CodeTooManySubscriptions, fmt.Sprintf("more than %d subscription requests waiting", maxQueuedOps)))
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
	n.readers.submit(func() { n.runOps(s, op) })
}

// runOps runs op, then the operations queued behind it, then marks s not
// busy. The caller set s.busy.
func (n *Node) runOps(s *session, op func()) {
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

// readTimeout bounds one store read job for a connection.
const readTimeout = 30 * time.Second
