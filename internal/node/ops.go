package node

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/herald-push/herald/internal/appstats"
	"github.com/herald-push/herald/internal/hub"
	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/internal/store"
	"github.com/herald-push/herald/internal/switches"
	"github.com/herald-push/herald/protocol"
)

// Message is what an application backend pushes.
type Message struct {
	ID      string // caller's id; generated when empty. Retrying with the same id stores nothing new.
	Payload []byte
	TTL     time.Duration // inbox messages: lifetime; 0 means the node's default
}

// Stream names.
func userStream(user string) string   { return "u:" + user }
func topicStream(topic string) string { return "t:" + topic }

const broadcastStream = "b"

func (n *Node) messageID(id string) string {
	if id != "" {
		return id
	}
	return n.idPrefix + strconv.FormatUint(n.msgSeq.Add(1), 36)
}

func (n *Node) pushFrame(stream string, m Message) *protocol.Encoded {
	return protocol.Encode(&protocol.Frame{
		Type:    protocol.TypePush,
		Stream:  stream,
		MsgID:   m.ID,
		Payload: m.Payload,
		Time:    n.cfg.Now().UnixMilli(),
	})
}

// statsKind is the appstats kind of a hub stream.
func statsKind(st hub.Stream) appstats.Kind {
	switch st.Kind {
	case hub.Inbox:
		return appstats.Inbox
	case hub.Topic:
		return appstats.Topic
	}
	return appstats.Broadcast
}

// accepted counts a message of st accepted here and stamps its frame
// (not shared yet) for the delivery-latency histogram; e is nil for a
// message held while its app is paused.
func (n *Node) accepted(st hub.Stream, e *protocol.Encoded) {
	if n.cfg.Stats != nil {
		n.cfg.Stats.Accept(e, st.App, statsKind(st))
	}
}

// stamp stamps the frame of a message of st that reached this node
// without being accepted here (relayed, or read to fill a gap).
func (n *Node) stamp(st hub.Stream, e *protocol.Encoded) {
	if n.cfg.Stats != nil {
		n.cfg.Stats.Stamp(e, st.App, statsKind(st))
	}
}

// PushUser stores m durably in user's inbox, then delivers it to every
// connected device of user. Devices that are not connected get it when
// they connect, until it expires.
func (n *Node) PushUser(ctx context.Context, app, user string, m Message) (Accepted, error) {
	m.ID = n.messageID(m.ID)
	return n.pushInbox(ctx, app, user, m)
}

// PushUsers pushes m, under one message id, to each user's inbox.
// Different users are appended concurrently, so their writes share fsyncs.
func (n *Node) PushUsers(ctx context.Context, app string, users []string, m Message) ([]Accepted, error) {
	m.ID = n.messageID(m.ID)
	msgs := make([]Message, len(users))
	for i := range msgs {
		msgs[i] = m
	}
	return n.PushMany(ctx, app, users, msgs)
}

// PushMany pushes msgs[i] to users[i]. Messages to one user keep their
// order. Up to chunkUsers users at a time are stored in one durable write
// (one fsync) and then sent. It returns the first error, with the results
// of what was accepted.
func (n *Node) PushMany(ctx context.Context, app string, users []string, msgs []Message) ([]Accepted, error) {
	out := make([]Accepted, len(msgs))
	byUser := make(map[string][]int, len(users))
	var order []string
	for i, u := range users {
		msgs[i].ID = n.messageID(msgs[i].ID)
		if _, ok := byUser[u]; !ok {
			order = append(order, u)
		}
		byUser[u] = append(byUser[u], i)
	}
	for chunk := range slices.Chunk(order, chunkUsers) {
		if err := n.pushChunk(ctx, app, chunk, byUser, msgs, out); err != nil {
			return out, err
		}
	}
	return out, nil
}

// chunkUsers bounds the users one bulk append writes to.
const chunkUsers = 256

// pushChunk stores the messages of users (msgs[i] for i in byUser[user])
// in their inboxes with one AppendMulti, then hands them to the hub.
func (n *Node) pushChunk(ctx context.Context, app string, users []string, byUser map[string][]int, msgs []Message, out []Accepted) error {
	now := n.cfg.Now()
	appends := make([]store.StreamAppend, len(users))
	for k, u := range users {
		idx := byUser[u]
		sm := make([]store.Message, len(idx))
		for j, i := range idx {
			sm[j] = n.storedMessage(msgs[i], now)
		}
		appends[k] = store.StreamAppend{Stream: inboxStream(app, u), Msgs: sm}
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	res, err := n.store.AppendMulti(actx, appends)
	if err != nil {
		return fmt.Errorf("%w: append to %d inboxes: %v", ErrStore, len(users), err)
	}
	for k, u := range users {
		for j, i := range byUser[u] {
			r := res[k][j]
			a := Accepted{ID: msgs[i].ID, Seq: r.Seq, Duplicate: r.Duplicate}
			if a.Duplicate {
				a.Connections = n.resend(actx, app, u, r)
			} else if n.paused(app) {
				a.Held = true // the hub routes it when the app is resumed
				n.accepted(hub.Stream{Kind: hub.Inbox, App: app, Name: u}, nil)
			} else {
				m := appends[k].Msgs[j]
				m.Seq = a.Seq
				e := inboxPush(u, r.Epoch, m)
				st := hub.Stream{Kind: hub.Inbox, App: app, Name: u}
				n.accepted(st, e)
				a.Connections, _ = n.hub.DeliverUser(app, u, r.Epoch, hub.Ordered{Seq: a.Seq, Frame: e})
				n.relay(st, e)
			}
			out[i] = a
		}
	}
	return nil
}

// Presence returns the online sessions of user.
func (n *Node) Presence(ctx context.Context, app, user string) ([]registry.Session, error) {
	if err := n.switchedOff(switches.PresenceOff, app); err != nil {
		return nil, err
	}
	return n.reg.Lookup(ctx, app, user)
}

// Kick disconnects user's connections on this node (only device's, if
// device is not empty) and returns how many were closed.
func (n *Node) Kick(ctx context.Context, app, user, device, reason string) (int, error) {
	d := protocol.NewDisconnect(protocol.DisconnectKicked)
	if reason != "" {
		d.Reason = reason
	}
	sessions, err := n.reg.Lookup(ctx, app, user)
	if err != nil {
		return 0, err
	}
	closed := 0
	for _, s := range sessions {
		if device != "" && s.Device != device {
			continue
		}
		if n.closeSession(s, d) {
			closed++
		}
	}
	return closed, nil
}

// Stats are the node's own counters.
type Stats struct {
	CaughtUp      uint64 `json:"caught_up"`     // stored messages sent to devices on (re)connect
	Recovered     uint64 `json:"recovered"`     // topic and broadcast messages replayed to resubscribing clients
	Unrecovered   uint64 `json:"unrecovered"`   // recoveries answered "cannot recover" (history trimmed or expired, epoch changed)
	Undeliverable uint64 `json:"undeliverable"` // messages skipped for a device after too many redeliveries
	Sessions      int    `json:"sessions"`      // online sessions
	Acks          uint64 `json:"acks"`          // ACK frames received
	Uplinks       uint64 `json:"uplinks"`       // UPLINK frames received (refused)
	RemoteIn      uint64 `json:"remote_in"`     // messages other nodes appended that reached this node's hub (cluster)
	RelayErrors   uint64 `json:"relay_errors"`  // messages appended here that the broker could not carry to other nodes (they fill them from the store)
	// AppLimitRefused counts CONNECTs refused because their app was at
	// its connection limit.
	AppLimitRefused uint64 `json:"app_limit_refused"`
	// Degrade counts what the degrade switches did.
	Degrade DegradeStats `json:"degrade"`
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{Sessions: n.reg.Count(), Acks: n.acks.Load(), Uplinks: n.uplinks.Load(), CaughtUp: n.caughtUp.Load(), Undeliverable: n.undeliverable.Load(),
		Recovered: n.recovered.Load(), Unrecovered: n.unrecovered.Load(), RemoteIn: n.remoteIn.Load(), RelayErrors: n.relayErrors.Load(), AppLimitRefused: n.appLimitRefused.Load(), Degrade: n.DegradeStats()}
}
