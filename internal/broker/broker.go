// Package broker carries messages between the nodes of a cluster: from the
// node that accepted a message to every other node with a connection that
// needs it, and control messages to one node.
//
// A message is addressed by a Subject: a user's devices, a topic's
// subscribers, an app's every connection (broadcast), or one node. A node
// registers interest in a subject with Subscribe when its first local
// connection needs it and drops it when the last one leaves; Publish reaches
// exactly the other nodes with interest, never the publisher itself (it
// delivers to its own connections directly). A node receives only what its
// connections need.
//
// Two implementations pass one conformance suite (package brokertest):
//
//   - Memory, from a Network: in-process delivery between nodes of one
//     process (tests of a cluster, embedding). On a network of one node
//     Publish has no one to deliver to and costs 7-27 ns, mostly checking
//     the subject. A single-node server uses no broker at all.
//   - NATS: one NATS connection per node, one NATS subscription per subject
//     with local interest. See NewNATS for subjects, ordering, outages and the
//     self-check behind Health.
//
// Delivery is best effort. Handlers get the messages of one subject from one
// publisher in the order they were published, one call at a time per
// subject. A message can be lost during an outage or when a node's handlers
// fall behind; the broker never loses one silently: Health turns non-nil
// and, once delivery works again, the OnResync callback names the subjects
// concerned (or all of them), so the node can read what it missed from the
// store, where every message was written before it was published.
package broker

import (
	"context"
	"errors"
	"fmt"
)

// Errors returned (wrapped) by brokers; test with errors.Is.
var (
	// ErrClosed means the broker was closed.
	ErrClosed = errors.New("broker: closed")
	// ErrUnavailable means the broker cannot reach the other nodes now
	// (for NATS: the connection is down and reconnecting). Nothing was
	// sent or buffered.
	ErrUnavailable = errors.New("broker: unavailable")
	// ErrInvalidSubject means a Subject breaks the rules of its Kind.
	ErrInvalidSubject = errors.New("broker: invalid subject")
)

// Kind says what a Subject addresses.
type Kind uint8

// The kinds of subject. The zero Kind is invalid.
const (
	// User addresses every device of one user of an app.
	User Kind = iota + 1
	// Topic addresses the subscribers of one topic of an app.
	Topic
	// Broadcast addresses every connection of an app.
	Broadcast
	// Node addresses one node (control messages).
	Node
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case User:
		return "user"
	case Topic:
		return "topic"
	case Broadcast:
		return "broadcast"
	case Node:
		return "node"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MaxNameLen is the longest App or Name, in bytes. Any bytes are allowed:
// the NATS broker encodes them (see EncodeToken), at most three bytes per
// byte, so a subject always fits a NATS protocol line.
const MaxNameLen = 256

// Subject names what a message is for. It is comparable and can be a map
// key.
type Subject struct {
	Kind Kind   // User, Topic, Broadcast or Node
	App  string // the app; empty for Node
	Name string // the user id, topic or node id; empty for Broadcast
}

// UserSubject returns the subject of user's devices in app.
func UserSubject(app, user string) Subject { return Subject{Kind: User, App: app, Name: user} }

// TopicSubject returns the subject of topic's subscribers in app.
func TopicSubject(app, topic string) Subject { return Subject{Kind: Topic, App: app, Name: topic} }

// BroadcastSubject returns the subject of every connection of app.
func BroadcastSubject(app string) Subject { return Subject{Kind: Broadcast, App: app} }

// NodeSubject returns the control subject of node id.
func NodeSubject(id string) Subject { return Subject{Kind: Node, Name: id} }

// EveryNode is the node id of the control subject every node hears
// (AllNodesSubject); no node may have it.
const EveryNode = "*"

// AllNodesSubject returns the control subject every node of the cluster
// subscribes to.
func AllNodesSubject() Subject { return NodeSubject(EveryNode) }

// Validate returns an error wrapping ErrInvalidSubject unless s follows the
// rules of its kind: User and Topic need App and Name, Broadcast needs App
// and no Name, Node needs Name and no App; each at most MaxNameLen bytes.
func (s Subject) Validate() error {
	var appOK, nameOK bool
	switch s.Kind {
	case User, Topic:
		appOK, nameOK = s.App != "", s.Name != ""
	case Broadcast:
		appOK, nameOK = s.App != "", s.Name == ""
	case Node:
		appOK, nameOK = s.App == "", s.Name != ""
	default:
		return fmt.Errorf("%w: %v", ErrInvalidSubject, s.Kind)
	}
	if !appOK || !nameOK || len(s.App) > MaxNameLen || len(s.Name) > MaxNameLen {
		return fmt.Errorf("%w: %v", ErrInvalidSubject, s)
	}
	return nil
}

// String returns a readable form of s for logs and errors.
func (s Subject) String() string {
	switch s.Kind {
	case Broadcast:
		return fmt.Sprintf("%v(%q)", s.Kind, s.App)
	case Node:
		return fmt.Sprintf("%v(%q)", s.Kind, s.Name)
	}
	return fmt.Sprintf("%v(%q, %q)", s.Kind, s.App, s.Name)
}

// Handler receives the payload of one message. It must not modify data
// (other nodes of a memory network may share it) and must not block for
// long: it holds up the subject's next messages and, past the pending
// limit, messages get dropped (and reported).
type Handler func(data []byte)

// Broker carries messages between the nodes of a cluster. It is safe for
// concurrent use.
type Broker interface {
	// Publish sends data to the other nodes subscribed to subj; the
	// publishing node never gets it (it delivers to its own connections
	// itself). It does not wait for the other nodes; data may be reused
	// when it returns. It fails at once, with an error wrapping
	// ErrUnavailable, when the other nodes cannot be reached.
	Publish(ctx context.Context, subj Subject, data []byte) error

	// Subscribe registers this node's interest in subj: h gets every
	// message other nodes publish to subj, in the order each of them
	// published it; calls for one subject are serialised. Subscribers to
	// one subject on one node share one registration. Subscribe returns
	// when the interest is in place, so that messages published after it
	// returns arrive; if that cannot be confirmed in time (an outage, ctx
	// done) it still returns the subscription, which the broker puts in
	// place as soon as it can, keeps Health non-nil meanwhile and then
	// reports the subject through OnResync.
	Subscribe(ctx context.Context, subj Subject, h Handler) (Subscription, error)

	// Health is nil while messages flow. Otherwise it says why not:
	// disconnected, a subscription not confirmed, messages dropped and not
	// yet reported through OnResync, the self-check failing, or closed.
	Health() error

	// Stats returns the broker's counters.
	Stats() Stats

	// Close stops delivery and releases the broker's resources; handler
	// calls under way finish first, so Close must not be called from a
	// handler. Further calls return ErrClosed; Close is idempotent.
	Close() error
}

// Subscription is one Subscribe call's interest in a subject.
type Subscription interface {
	// Unsubscribe stops calls of the handler for messages that arrive
	// after it returns; a call under way may finish. The subject's
	// registration goes when its last local subscriber leaves. Calling it
	// again does nothing.
	Unsubscribe() error
}

// Resync tells a node that messages to some of its subscriptions may have
// been lost, and that delivery works again: each subscription is in place
// and registered, so reading the store from the node's positions now and
// then taking the live flow (deduplicated by sequence) misses nothing.
type Resync struct {
	// Subjects are the subscriptions concerned; nil means every
	// subscription of the node (after a reconnect).
	Subjects []Subject
	// Reason says what happened, for logs.
	Reason string
}

// Options are the settings every implementation shares.
type Options struct {
	// OnResync is called when messages may have been lost (see Resync).
	// Calls are serialised and must not block for long; nil ignores them
	// (Health and Stats still show losses).
	OnResync func(Resync)
	// PendingLimit is how many received messages may wait for a handler
	// before new ones are dropped: per subject for Memory, per dispatcher
	// (a goroutine shared by a hash of the subjects) for NATS. Default
	// 65536.
	PendingLimit int
}

// DefaultPendingLimit is the default Options.PendingLimit.
const DefaultPendingLimit = 65536

func (o Options) pendingLimit() int {
	if o.PendingLimit <= 0 {
		return DefaultPendingLimit
	}
	return o.PendingLimit
}

// Stats is a snapshot of a broker's counters.
type Stats struct {
	Published     uint64 `json:"published"`      // messages sent toward other nodes (a memory network with one node sends none)
	PublishErrors uint64 `json:"publish_errors"` // Publish calls that failed
	Received      uint64 `json:"received"`       // messages that reached this node (self-checks excluded), delivered or not
	Dropped       uint64 `json:"dropped"`        // received messages dropped because handlers fell behind
	Resyncs       uint64 `json:"resyncs"`        // OnResync calls
	Reconnects    uint64 `json:"reconnects"`     // reconnections to the server (NATS)
	Subjects      int64  `json:"subjects"`       // subjects with local interest
}
