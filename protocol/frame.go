// Package protocol defines Herald's client wire protocol: the frames a client
// and a server exchange, their binary and JSON encodings, size limits, and
// the error and disconnect codes. It is specified in docs/protocol.md.
//
// The package uses only the standard library (and the module's own
// internal/jsonstr), starts no goroutines and does no network I/O, so
// devices, SDKs and the server share one implementation.
package protocol

import (
	"fmt"
	"time"
)

// Version is the protocol version this package speaks. A client states the
// version it speaks in CONNECT; the server refuses versions it does not know.
const Version = 1

// Type identifies a frame.
type Type uint8

// Frame types. The direction each travels is given in brackets.
const (
	// TypeConnect authenticates a connection [client → server]. It must be
	// the first frame on a connection.
	TypeConnect Type = 1
	// TypeConnected accepts a CONNECT [server → client].
	TypeConnected Type = 2
	// TypePush carries one message of a stream [server → client].
	TypePush Type = 3
	// TypeAck acknowledges every message of a stream up to a sequence
	// [client → server].
	TypeAck Type = 4
	// TypeSubscribe subscribes to a topic [client → server].
	TypeSubscribe Type = 5
	// TypeUnsubscribe ends a subscription [client → server].
	TypeUnsubscribe Type = 6
	// TypePing is a heartbeat [either way]; the peer answers with PONG.
	TypePing Type = 7
	// TypePong answers a PING [either way].
	TypePong Type = 8
	// TypeDisconnect tells the peer the connection is closing, why, and
	// whether and where to reconnect [server → client, or client → server].
	TypeDisconnect Type = 9
	// TypeError reports a failed request or a protocol violation
	// [server → client].
	TypeError Type = 10
	// TypeUplink carries a message from a client to the application backend
	// [client → server]. Reserved: servers of this version answer ERROR
	// CodeNotSupported.
	TypeUplink Type = 11
	// TypeReply acknowledges a successful request that carried an ID
	// (SUBSCRIBE, UNSUBSCRIBE, UPLINK) [server → client].
	TypeReply Type = 12
)

// String returns the frame type's name as used in the JSON encoding.
func (t Type) String() string {
	switch t {
	case TypeConnect:
		return "connect"
	case TypeConnected:
		return "connected"
	case TypePush:
		return "push"
	case TypeAck:
		return "ack"
	case TypeSubscribe:
		return "subscribe"
	case TypeUnsubscribe:
		return "unsubscribe"
	case TypePing:
		return "ping"
	case TypePong:
		return "pong"
	case TypeDisconnect:
		return "disconnect"
	case TypeError:
		return "error"
	case TypeUplink:
		return "uplink"
	case TypeReply:
		return "reply"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Valid reports whether t is a frame type of this protocol version.
func (t Type) Valid() bool { return t >= TypeConnect && t <= TypeReply }

func typeFromName(s string) (Type, bool) {
	for t := TypeConnect; t <= TypeReply; t++ {
		if t.String() == s {
			return t, true
		}
	}
	return 0, false
}

// Position is a place in a stream: the epoch of the stream's storage and the
// last sequence number the client has seen. A changed epoch means the server
// lost the stream's history and the client cannot resume from Seq.
type Position struct {
	Stream string
	Epoch  string
	Seq    uint64
}

// Frame is one protocol frame. Which fields are meaningful depends on Type;
// docs/protocol.md lists them per type. The zero value of a field means
// "absent" and is not encoded.
type Frame struct {
	Type Type

	// ID correlates a request (SUBSCRIBE, UNSUBSCRIBE, UPLINK) with its
	// REPLY or ERROR.
	ID uint32

	// CONNECT.
	Version uint32     // protocol version the client speaks
	Token   string     // signed client token
	Device  string     // device id; one user may have many devices
	Client  string     // client library and version, e.g. "herald-go/0.1"
	Resume  []Position // where the client left off, per stream

	// CONNECTED.
	Session   string        // session id assigned by the server
	Node      string        // node that holds the session
	Heartbeat time.Duration // the client should PING at least this often (ms on the wire)

	// PUSH, ACK, SUBSCRIBE, UNSUBSCRIBE, UPLINK.
	Stream  string // stream the message belongs to: "u:<user>", "t:<topic>" or "b"
	Topic   string // topic name (SUBSCRIBE, UNSUBSCRIBE)
	Epoch   string // stream epoch (PUSH; SUBSCRIBE when recovering)
	Seq     uint64 // sequence number in the stream (PUSH, ACK; SUBSCRIBE when recovering)
	MsgID   string // message id, unique per app; clients drop duplicates by it
	Payload []byte // opaque application data
	Time    int64  // unix milliseconds: when the server accepted the message (PUSH), server clock (CONNECTED), sender clock (PING/PONG)

	// DISCONNECT and ERROR.
	Code      uint32 // DisconnectCode or ErrorCode
	Reason    string // human-readable reason or error text
	Reconnect bool   // DISCONNECT: whether the client should reconnect
	Alt       string // DISCONNECT: an alternate address to reconnect to

	// REPLY that ends a recovery (a SUBSCRIBE with Epoch, or the broadcast
	// stream after a CONNECT with a Resume position for it): every message
	// after the client's position was sent before this REPLY. False: the
	// server could not recover them (history trimmed or expired, or the
	// epoch changed) and the client must resynchronise from elsewhere.
	Recovered bool
}

// Validate checks that the fields a frame of its type requires are present
// and within the limits. Decoders call it; encoders do not.
func (f *Frame) Validate(lim Limits) error {
	if !f.Type.Valid() {
		return fmt.Errorf("%w: %d", ErrUnknownType, uint8(f.Type))
	}
	if len(f.Payload) > lim.MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes exceeds %d", ErrTooLarge, len(f.Payload), lim.MaxPayload)
	}
	if len(f.Resume) > lim.MaxResume {
		return fmt.Errorf("%w: %d resume positions exceed %d", ErrTooLarge, len(f.Resume), lim.MaxResume)
	}
	switch f.Type {
	case TypeConnect:
		if f.Token == "" {
			return fmt.Errorf("%w: connect without token", ErrMissingField)
		}
	case TypeSubscribe, TypeUnsubscribe:
		if f.Topic == "" {
			return fmt.Errorf("%w: %s without topic", ErrMissingField, f.Type)
		}
	case TypeAck:
		if f.Stream == "" || f.Seq == 0 {
			return fmt.Errorf("%w: ack needs stream and seq", ErrMissingField)
		}
	case TypePush:
		if f.Stream == "" {
			return fmt.Errorf("%w: push without stream", ErrMissingField)
		}
	}
	return nil
}

// Limits bound what a decoder accepts.
type Limits struct {
	MaxFrame   int // bytes of one encoded frame, excluding the TCP length prefix
	MaxPayload int // bytes of Payload
	MaxString  int // bytes of any string field
	MaxResume  int // entries in Resume
	// MaxConnect bounds what a server reads before it has accepted CONNECT:
	// one binary frame body (TCP and WebSocket) and one WebSocket message,
	// in bytes. A CONNECT with a token and a few hundred bytes of resume
	// positions fits in the default, DefaultMaxConnect.
	MaxConnect int
}

// DefaultMaxConnect is the default of Limits.MaxConnect: 8 KiB.
const DefaultMaxConnect = 8 << 10

// DefaultLimits returns the limits a server applies unless configured otherwise.
func DefaultLimits() Limits {
	return Limits{MaxFrame: 64 << 10, MaxPayload: 32 << 10, MaxString: 4096, MaxResume: 256, MaxConnect: DefaultMaxConnect}
}
