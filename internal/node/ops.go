package node

import (
	"strconv"

	"github.com/herald-push/herald/internal/registry"
	"github.com/herald-push/herald/protocol"
)

// Message is what an application backend pushes.
type Message struct {
	ID      string // caller's id; generated when empty
	Payload []byte
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

// PushUser delivers m to every connected device of user. It returns the
// message id and the number of connections written to.
func (n *Node) PushUser(app, user string, m Message) (string, int) {
	m.ID = n.messageID(m.ID)
	return m.ID, n.hub.PushUser(app, user, n.pushFrame(userStream(user), m))
}

// PushUsers delivers m, under one message id, to every connected device of
// each user, and returns the number of connections written to per user.
func (n *Node) PushUsers(app string, users []string, m Message) (string, []int) {
	m.ID = n.messageID(m.ID)
	counts := make([]int, len(users))
	for i, u := range users {
		counts[i] = n.hub.PushUser(app, u, n.pushFrame(userStream(u), m))
	}
	return m.ID, counts
}

// Publish fans m out to the local subscribers of topic and returns the
// message id and the number of subscribers.
func (n *Node) Publish(app, topic string, m Message) (string, int) {
	m.ID = n.messageID(m.ID)
	return m.ID, n.hub.Publish(app, topic, n.pushFrame(topicStream(topic), m))
}

// Broadcast fans m out to every connection of app.
func (n *Node) Broadcast(app string, m Message) (string, int) {
	m.ID = n.messageID(m.ID)
	return m.ID, n.hub.Broadcast(app, n.pushFrame(broadcastStream, m))
}

// Presence returns the online sessions of user.
func (n *Node) Presence(app, user string) []registry.Session {
	return n.reg.Lookup(app, user)
}

// Kick disconnects user's connections on this node (only device's, if
// device is not empty) and returns how many were closed.
func (n *Node) Kick(app, user, device, reason string) int {
	d := protocol.NewDisconnect(protocol.DisconnectKicked)
	if reason != "" {
		d.Reason = reason
	}
	closed := 0
	for _, s := range n.reg.Lookup(app, user) {
		if device != "" && s.Device != device {
			continue
		}
		if s.Node == n.cfg.ID && n.closeConn(app, user, s.ConnID, d) {
			closed++
		}
	}
	return closed
}

// Stats are the node's own counters.
type Stats struct {
	Sessions int    `json:"sessions"` // online sessions
	Acks     uint64 `json:"acks"`     // ACK frames received
	Uplinks  uint64 `json:"uplinks"`  // UPLINK frames received (refused)
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	return Stats{Sessions: n.reg.Count(), Acks: n.acks.Load(), Uplinks: n.uplinks.Load()}
}
