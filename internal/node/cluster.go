package node

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-push/herald/internal/broker"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/protocol"
)

// A node in a cluster.
//
// Every node appends to the shared store and routes what it appended to
// its own connections itself; the broker carries the message (its PUSH
// frame, with its position) to the other nodes that have a connection
// following the stream, whose hubs route it in order with what they
// appended themselves. A node has interest in a stream (a broker
// subscription) while a local connection follows it or is about to: the
// subscription is in place before that connection reads the store, so a
// message appended after the read reaches the node live, and one lost on
// the way is a gap its hub fills from the store. After a broker outage
// (Resync) the node compares each stream's head in the store with what
// its hub routed, and fills what is missing.
//
// Control messages (close a connection: kick, duplicate login) travel on
// the target node's own subject.

// Broker carries messages to the other nodes (broker.Broker is one).
type Broker interface {
	Publish(ctx context.Context, subj broker.Subject, data []byte) error
	Subscribe(ctx context.Context, subj broker.Subject, h broker.Handler) (broker.Subscription, error)
	Health() error
}

// subjectOf is the broker subject of a hub stream.
func subjectOf(st hub.Stream) broker.Subject {
	switch st.Kind {
	case hub.Inbox:
		return broker.UserSubject(st.App, st.Name)
	case hub.Topic:
		return broker.TopicSubject(st.App, st.Name)
	}
	return broker.BroadcastSubject(st.App)
}

// interest counts the local reasons to hear a stream from other nodes, and
// holds its broker subscription while there are any.
type interest struct {
	mu   sync.Mutex
	subs map[hub.Stream]*want
}

// want is one stream's interest.
type want struct {
	refs  int
	ready chan struct{} // closed when the subscription is in place (or failed)
	sub   broker.Subscription
	err   error
}

// want registers a local reason to hear st from other nodes, subscribing
// on the first one (ready waits for it). Without a broker it does
// nothing.
func (n *Node) want(st hub.Stream) {
	if n.broker == nil {
		return
	}
	n.interest.mu.Lock()
	w := n.interest.subs[st]
	if w == nil {
		w = &want{ready: make(chan struct{})}
		n.interest.subs[st] = w
		go n.subscribeBroker(st, w)
	}
	w.refs++
	n.interest.mu.Unlock()
}

// ready waits until st's subscription, wanted by the caller, is in place.
func (n *Node) ready(ctx context.Context, st hub.Stream) {
	if n.broker == nil {
		return
	}
	n.interest.mu.Lock()
	w := n.interest.subs[st]
	n.interest.mu.Unlock()
	if w == nil {
		return
	}
	select {
	case <-w.ready:
	case <-ctx.Done():
	}
}

// unwant drops a reason registered by want; the last one unsubscribes.
func (n *Node) unwant(st hub.Stream) {
	if n.broker == nil {
		return
	}
	n.interest.mu.Lock()
	w := n.interest.subs[st]
	if w == nil {
		n.interest.mu.Unlock()
		return
	}
	if w.refs--; w.refs > 0 {
		n.interest.mu.Unlock()
		return
	}
	delete(n.interest.subs, st)
	n.interest.mu.Unlock()
	go func() {
		<-w.ready
		if w.sub != nil {
			_ = w.sub.Unsubscribe()
		}
	}()
}

// unwantTopic drops the interest of a topic join that did not happen (the
// inbox's and broadcasts' interests are the session's, dropped at
// release).
func (n *Node) unwantTopic(st hub.Stream) {
	if st.Kind == hub.Topic {
		n.unwant(st)
	}
}

// subscribeBroker puts w's subscription in place.
func (n *Node) subscribeBroker(st hub.Stream, w *want) {
	defer close(w.ready)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w.sub, w.err = n.broker.Subscribe(ctx, subjectOf(st), func(data []byte) { n.remote(st, data) })
	if w.err != nil {
		n.log.Warn("broker subscribe failed; messages of the stream come from the store when a gap shows", "stream", st.Name, "app", st.App, "err", w.err)
	}
}

// remote routes a message another node appended and published.
func (n *Node) remote(st hub.Stream, data []byte) {
	body, _, err := protocol.NextFramed(data, n.limits)
	if err == nil {
		f := new(protocol.Frame)
		if err = protocol.DecodeBinary(body, f, n.limits); err == nil {
			n.remoteIn.Add(1)
			o := hub.Ordered{Seq: f.Seq, Frame: protocol.Encode(f)}
			// Latency is counted from here: not the time between nodes.
			n.stamp(st, o.Frame)
			if f.Seq == 0 { // history off: live only, unordered
				if st.Kind == hub.Broadcast {
					n.hub.Broadcast(st.App, o.Frame)
				} else {
					n.hub.Publish(st.App, st.Name, o.Frame)
				}
				return
			}
			switch st.Kind {
			case hub.Inbox:
				n.hub.DeliverUser(st.App, st.Name, f.Epoch, o)
			case hub.Topic:
				n.hub.PublishAt(st.App, st.Name, f.Epoch, o)
			default:
				n.hub.BroadcastAt(st.App, f.Epoch, o)
			}
			return
		}
	}
	n.log.Warn("bad message from the broker", "stream", st.Name, "app", st.App, "err", err)
}

// relay publishes a message this node appended to the other nodes.
func (n *Node) relay(st hub.Stream, e *protocol.Encoded) {
	if n.broker == nil {
		return
	}
	// Publish does not wait for the other nodes (it fails at once when
	// they cannot be reached): no deadline, and no timer per message.
	if err := n.broker.Publish(context.Background(), subjectOf(st), e.Framed()); err != nil {
		// Stored already: the other nodes fill it from the store when the
		// next message shows the gap, or at the broker's resync.
		n.relayErrors.Add(1)
		n.log.Debug("broker publish failed", "stream", st.Name, "app", st.App, "err", err)
	}
}

// Resync reads, for every stream this node follows (or those of r), where
// the store stands, and has the hub fill what it has not routed: messages
// published while the broker was out. It is the broker's OnResync.
func (n *Node) Resync(r broker.Resync) {
	n.interest.mu.Lock()
	var streams []hub.Stream
	for st := range n.interest.subs {
		if r.Subjects == nil || containsSubject(r.Subjects, subjectOf(st)) {
			streams = append(streams, st)
		}
	}
	n.interest.mu.Unlock()
	n.log.Info("broker resync: checking streams against the store", "streams", len(streams), "reason", r.Reason)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, st := range streams {
			key, _ := storeStream(st)
			epoch, _, last, err := n.store.Head(ctx, key)
			if err != nil {
				n.log.Warn("resync: stream head", "stream", key, "err", err)
				continue
			}
			n.hub.Expect(st, hub.Position{Epoch: epoch, Seq: last})
		}
	}()
}

func containsSubject(subjects []broker.Subject, s broker.Subject) bool {
	for _, x := range subjects {
		if x == s {
			return true
		}
	}
	return false
}

// control is a message on a node's own subject.
type control struct {
	Op     string `json:"op"` // "close"
	App    string `json:"app"`
	User   string `json:"user"`
	Conn   uint64 `json:"conn"`
	Code   uint32 `json:"code"`
	Reason string `json:"reason,omitempty"`
}

// remoteClose asks the node of session r to close its connection.
func (n *Node) remoteClose(r registry.Session, d protocol.Disconnect) bool {
	if n.broker == nil {
		return false
	}
	data, _ := json.Marshal(control{Op: "close", App: r.App, User: r.User, Conn: r.ConnID, Code: uint32(d.Code), Reason: d.Reason})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := n.broker.Publish(ctx, broker.NodeSubject(r.Node), data); err != nil {
		n.log.Warn("control message not sent", "node", r.Node, "user", r.User, "err", err)
		return false
	}
	return true
}

// listenControl subscribes to this node's control subject.
func (n *Node) listenControl(ctx context.Context) error {
	if n.broker == nil {
		return nil
	}
	_, err := n.broker.Subscribe(ctx, broker.NodeSubject(n.cfg.ID), func(data []byte) {
		var m control
		if err := json.Unmarshal(data, &m); err != nil || m.Op != "close" {
			n.log.Warn("bad control message", "err", err)
			return
		}
		d := protocol.NewDisconnect(protocol.DisconnectCode(m.Code))
		if m.Reason != "" {
			d.Reason = m.Reason
		}
		n.closeConn(m.App, m.User, m.Conn, d)
	})
	return err
}

// clusterCounters are the node's cluster counters.
type clusterCounters struct {
	remoteIn, relayErrors atomic.Uint64
}

// Sessions yields the sessions of this node's connections (for the
// registry to claim again after its lease was lost).
func (n *Node) Sessions(yield func(*registry.Session) bool) {
	n.hub.EachUserConn(func(hc hub.Conn) bool {
		c, ok := hc.(Conn)
		if !ok {
			return true
		}
		s, ok := c.Session().(*session)
		if !ok || c.Closed() {
			return true
		}
		return yield(&s.reg)
	})
}

// CloseLost closes the connection of session r, which the registry could
// not claim again after its lease was lost: its device logged in elsewhere
// meanwhile.
func (n *Node) CloseLost(r *registry.Session) {
	n.closeConn(r.App, r.User, r.ConnID, protocol.NewDisconnect(protocol.DisconnectReplaced))
}
