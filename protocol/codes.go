package protocol

import (
	"errors"
	"fmt"
)

// Decoding errors. Every error a decoder returns wraps one of these.
var (
	// ErrMalformed means the bytes are not a frame of this protocol.
	ErrMalformed = errors.New("protocol: malformed frame")
	// ErrTooLarge means a frame, a field or a payload is over its limit.
	ErrTooLarge = errors.New("protocol: frame too large")
	// ErrUnknownType means the frame type is not one of this version's.
	ErrUnknownType = errors.New("protocol: unknown frame type")
	// ErrBadVersion means the encoding version byte is not one this package reads.
	ErrBadVersion = errors.New("protocol: unsupported encoding version")
	// ErrMissingField means a field the frame type requires is absent.
	ErrMissingField = errors.New("protocol: missing field")
)

// ErrorCode is carried by ERROR frames. Codes below 2000 concern a single
// request and leave the connection open; the server sends a DISCONNECT after
// an ERROR whose code is 2000 or above.
type ErrorCode uint32

// Error codes.
const (
	// CodeBadRequest: a well-formed frame that makes no sense here (for
	// example a second CONNECT).
	CodeBadRequest ErrorCode = 1000
	// CodeForbidden: the token does not allow this topic.
	CodeForbidden ErrorCode = 1001
	// CodeTooManySubscriptions: the per-connection subscription limit is reached.
	CodeTooManySubscriptions ErrorCode = 1002
	// CodeNotSupported: the server does not implement this request.
	CodeNotSupported ErrorCode = 1003
	// CodeBadName: a topic or stream name is empty, too long or has invalid characters.
	CodeBadName ErrorCode = 1004

	// CodeMalformed: the frame could not be decoded. Fatal.
	CodeMalformed ErrorCode = 2000
	// CodeTooLarge: the frame or its payload is over the limit. Fatal.
	CodeTooLarge ErrorCode = 2001
	// CodeUnsupportedVersion: the client's protocol version is unknown. Fatal.
	CodeUnsupportedVersion ErrorCode = 2002
	// CodeNotAuthenticated: a frame other than CONNECT arrived first. Fatal.
	CodeNotAuthenticated ErrorCode = 2003
	// CodeBadToken: the token is malformed, badly signed or for an unknown app. Fatal.
	CodeBadToken ErrorCode = 2004
	// CodeTokenExpired: the token has expired. Fatal.
	CodeTokenExpired ErrorCode = 2005
	// CodeRateLimited: the client went over a per-connection bound (frames
	// per second, subscription requests per second). Fatal: the server
	// then sends DISCONNECT DisconnectPolicyViolation.
	CodeRateLimited ErrorCode = 2006
	// CodeAppConnectionLimit: the app already has as many connections on
	// this server as it may. Fatal: the server then sends DISCONNECT
	// DisconnectAppConnectionLimit.
	CodeAppConnectionLimit ErrorCode = 2007
	// CodeUnavailable: the server takes no new connections for now (an
	// operator's degrade switch, or the node is draining). Fatal: the
	// server then sends DISCONNECT DisconnectUnavailable.
	CodeUnavailable ErrorCode = 2008
	// CodeInternal: the server failed; retry later. Fatal.
	CodeInternal ErrorCode = 2500
)

// Fatal reports whether the server closes the connection after this error.
func (c ErrorCode) Fatal() bool { return c >= 2000 }

// String returns a short name for the code.
func (c ErrorCode) String() string {
	switch c {
	case CodeBadRequest:
		return "bad request"
	case CodeForbidden:
		return "forbidden"
	case CodeTooManySubscriptions:
		return "too many subscriptions"
	case CodeNotSupported:
		return "not supported"
	case CodeBadName:
		return "bad name"
	case CodeMalformed:
		return "malformed frame"
	case CodeTooLarge:
		return "frame too large"
	case CodeUnsupportedVersion:
		return "unsupported version"
	case CodeNotAuthenticated:
		return "not authenticated"
	case CodeBadToken:
		return "bad token"
	case CodeTokenExpired:
		return "token expired"
	case CodeRateLimited:
		return "rate limited"
	case CodeAppConnectionLimit:
		return "app connection limit"
	case CodeUnavailable:
		return "unavailable"
	case CodeInternal:
		return "internal error"
	}
	return fmt.Sprintf("error(%d)", uint32(c))
}

// DisconnectCode says why a connection closed. It is carried by DISCONNECT
// frames, logged, and counted by the server's metrics.
type DisconnectCode uint32

// Disconnect codes.
const (
	// DisconnectNormal: the peer closed the connection on purpose.
	DisconnectNormal DisconnectCode = 3000
	// DisconnectShutdown: the server is draining or stopping; reconnect,
	// to Alt if given.
	DisconnectShutdown DisconnectCode = 3001
	// DisconnectSlowConsumer: the client did not read fast enough and its
	// outbound queue overflowed; reconnect.
	DisconnectSlowConsumer DisconnectCode = 3002
	// DisconnectReplaced: the same user and device connected again
	// elsewhere; do not reconnect.
	DisconnectReplaced DisconnectCode = 3003
	// DisconnectKicked: the application backend removed the client; do not
	// reconnect.
	DisconnectKicked DisconnectCode = 3004
	// DisconnectIdleTimeout: nothing was heard from the client for longer
	// than the heartbeat interval plus grace; reconnect.
	DisconnectIdleTimeout DisconnectCode = 3005
	// DisconnectAuthTimeout: no valid CONNECT arrived in time; reconnect.
	DisconnectAuthTimeout DisconnectCode = 3006
	// DisconnectAuthFailed: the token was refused; do not reconnect with it.
	DisconnectAuthFailed DisconnectCode = 3007
	// DisconnectProtocolError: the client sent something it must not; do
	// not reconnect without fixing the client.
	DisconnectProtocolError DisconnectCode = 3008
	// DisconnectDuplicateRefused: the same user and device is already
	// connected and the server keeps the older connection.
	DisconnectDuplicateRefused DisconnectCode = 3009
	// DisconnectConnectionLost: the socket failed or the peer went away
	// without a DISCONNECT. Never sent; used for logs and metrics.
	DisconnectConnectionLost DisconnectCode = 3010
	// DisconnectServerError: the server failed; reconnect.
	DisconnectServerError DisconnectCode = 3011
	// DisconnectPolicyViolation: the client went over a per-connection
	// bound (after ERROR CodeRateLimited); reconnect with backoff, and
	// send less.
	DisconnectPolicyViolation DisconnectCode = 3012
	// DisconnectAppConnectionLimit: the app is at its connection limit on
	// this server (after ERROR CodeAppConnectionLimit); reconnect with a
	// backoff of seconds, growing, with jitter.
	DisconnectAppConnectionLimit DisconnectCode = 3013
	// DisconnectUnavailable: the server takes no new connections for now
	// (after ERROR CodeUnavailable); reconnect with a backoff of seconds,
	// growing, with jitter (elsewhere, if there is another server).
	DisconnectUnavailable DisconnectCode = 3014
)

// lastDisconnectCode is the highest disconnect code of this version.
const lastDisconnectCode = DisconnectUnavailable

// String returns the reason in a form fit for logs and metric labels.
func (c DisconnectCode) String() string {
	switch c {
	case DisconnectNormal:
		return "normal"
	case DisconnectShutdown:
		return "shutdown"
	case DisconnectSlowConsumer:
		return "slow consumer"
	case DisconnectReplaced:
		return "replaced"
	case DisconnectKicked:
		return "kicked"
	case DisconnectIdleTimeout:
		return "idle timeout"
	case DisconnectAuthTimeout:
		return "auth timeout"
	case DisconnectAuthFailed:
		return "auth failed"
	case DisconnectProtocolError:
		return "protocol error"
	case DisconnectDuplicateRefused:
		return "duplicate refused"
	case DisconnectConnectionLost:
		return "connection lost"
	case DisconnectServerError:
		return "server error"
	case DisconnectPolicyViolation:
		return "policy violation"
	case DisconnectAppConnectionLimit:
		return "app connection limit"
	case DisconnectUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("disconnect(%d)", uint32(c))
}

// Reconnect reports whether a client should reconnect after this code.
func (c DisconnectCode) Reconnect() bool {
	switch c {
	case DisconnectShutdown, DisconnectSlowConsumer, DisconnectIdleTimeout,
		DisconnectAuthTimeout, DisconnectConnectionLost, DisconnectServerError,
		DisconnectPolicyViolation, DisconnectAppConnectionLimit, DisconnectUnavailable:
		return true
	}
	return false
}

// AllDisconnectCodes lists every disconnect code, for metrics that want a
// series per reason from the start.
func AllDisconnectCodes() []DisconnectCode {
	out := make([]DisconnectCode, 0, lastDisconnectCode-DisconnectNormal+1)
	for c := DisconnectNormal; c <= lastDisconnectCode; c++ {
		out = append(out, c)
	}
	return out
}

// Disconnect is a DisconnectCode with its details; it implements error so a
// client can return it from a read loop.
type Disconnect struct {
	Code      DisconnectCode
	Reason    string
	Reconnect bool
	Alt       string
}

// NewDisconnect returns a Disconnect for code with its default text and
// reconnect advice.
func NewDisconnect(code DisconnectCode) Disconnect {
	return Disconnect{Code: code, Reason: code.String(), Reconnect: code.Reconnect()}
}

// Error implements error.
func (d Disconnect) Error() string {
	if d.Reason == "" || d.Reason == d.Code.String() {
		return fmt.Sprintf("disconnected: %s (%d)", d.Code, uint32(d.Code))
	}
	return fmt.Sprintf("disconnected: %s (%d): %s", d.Code, uint32(d.Code), d.Reason)
}

// Frame returns the DISCONNECT frame for d.
func (d Disconnect) Frame() *Frame {
	return &Frame{Type: TypeDisconnect, Code: uint32(d.Code), Reason: d.Reason, Reconnect: d.Reconnect, Alt: d.Alt}
}

// DisconnectFrom reads a Disconnect out of a DISCONNECT frame.
func DisconnectFrom(f *Frame) Disconnect {
	return Disconnect{Code: DisconnectCode(f.Code), Reason: f.Reason, Reconnect: f.Reconnect, Alt: f.Alt}
}

// Error is an ERROR frame's content; it implements error.
type Error struct {
	ID   uint32
	Code ErrorCode
	Text string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Text == "" {
		return fmt.Sprintf("herald error %d (%s)", uint32(e.Code), e.Code)
	}
	return fmt.Sprintf("herald error %d (%s): %s", uint32(e.Code), e.Code, e.Text)
}

// Frame returns the ERROR frame for e.
func (e *Error) Frame() *Frame {
	return &Frame{Type: TypeError, ID: e.ID, Code: uint32(e.Code), Reason: e.Text}
}
