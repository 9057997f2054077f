// Package store is the storage role of durable delivery: append-only message
// streams with sequence numbers, an epoch, idempotent appends, per-device ACK
// cursors, TTL expiry and bounded history.
//
// A stream is named by the caller: one per user inbox, one per topic, one per
// app for broadcasts. A message is stored once, in the stream it was appended
// to; fan-out to the devices that read it is the caller's business. Sequence
// numbers start at 1 in every stream, grow by one per stored message and are
// never reused while the store's data lives (they survive Trim and Expire).
//
// Positions are (epoch, seq) pairs. Every stream has an epoch, a random id
// created with the stream's data and replaced when the store finds that
// data it had acknowledged is gone: a client that resumes with a position
// of another epoch resumes against data that no longer exists (a wiped
// disk, a memory store after a restart, a damaged log) and must be told its
// position is gone. Sequence numbers are never handed out twice within an
// epoch. The memory and embedded stores keep one epoch for all their
// streams; a store on a shared engine may keep one per stream.
//
// Removal has two kinds, and they differ in what a reader is told:
//
//   - Trim bounds a stream's history (by count or by age). It moves the
//     stream's first sequence forward; a reader asking for anything before it
//     gets ErrTrimmed, so it can tell its client that what it missed cannot
//     be recovered.
//   - Expiry is a message's own deadline. An expired message is never
//     returned, whether or not Expire has removed it yet, and its removal
//     does not move the first sequence: nothing a reader was owed is lost.
//
// Memory is the in-process implementation; package embedded keeps the same
// contract on disk, and package storetest is the conformance suite every
// implementation runs.
package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Errors returned by stores. They are wrapped with context; test with
// errors.Is.
var (
	// ErrTrimmed: the requested position is older than the stream's history
	// (Trim removed messages after it). Range returns it together with the
	// messages it still holds.
	ErrTrimmed = errors.New("store: position trimmed from stream history")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store: closed")
	// ErrInvalid: an argument is out of its domain (empty stream name, limit
	// below 1, an over-long name).
	ErrInvalid = errors.New("store: invalid argument")
	// ErrUnavailable: the store cannot take writes now (a disk error, a lost
	// engine connection) and is recovering by itself. An Append that fails
	// with it may or may not have stored its messages: retry with the same
	// ids. Health reports the cause until the store has recovered.
	ErrUnavailable = errors.New("store: unavailable")
)

// MaxNameLen bounds stream, device and message id lengths, in bytes.
const MaxNameLen = 1024

// Message is one stored message.
type Message struct {
	// Seq is assigned by Append; the value passed to Append is ignored.
	Seq uint64
	// ID is the message id, the idempotency key within the stream while the
	// message is held (until it is trimmed or expires). Empty: no
	// idempotency, every Append stores a new message.
	ID string
	// Payload is opaque. Append copies it; a Payload returned by Range must
	// not be modified.
	Payload []byte
	// Time is when the message was accepted; zero means the store's Now at
	// Append. Stores keep it at nanosecond precision without location.
	Time time.Time
	// Expires is when the message stops being delivered; zero means never
	// (it stays until trimmed).
	Expires time.Time
}

// Expired reports whether m has expired at now.
func (m *Message) Expired(now time.Time) bool {
	return !m.Expires.IsZero() && !now.Before(m.Expires)
}

// Appended is Append's result for one message.
type Appended struct {
	// Epoch is the epoch of the stream the message is held in.
	Epoch string
	// Seq is the message's sequence number.
	Seq uint64
	// Duplicate: a message with the same ID was already held by the stream
	// (or came earlier in the same Append); nothing was stored and Seq is the
	// original's.
	Duplicate bool
}

// StreamAppend is one stream's part of an AppendMulti call.
type StreamAppend struct {
	Stream string
	Msgs   []Message
}

// Position is where a reader stands in a stream: the stream's epoch when
// it read and the last sequence it has. A position whose Epoch differs from
// the stream's epoch now cannot be resumed.
type Position struct {
	Epoch string
	Seq   uint64
}

// Store is a set of append-only message streams. Implementations are safe
// for concurrent use.
//
// Stream names, device names and message ids are byte strings of at most
// MaxNameLen bytes; stream and device names must not be empty.
type Store interface {
	// Append stores msgs at the end of stream, in order, and returns one
	// Appended per message once they are durable under the store's sync
	// policy. Appends to one stream are serialised; appends to different
	// streams proceed in parallel and share fsyncs (group commit).
	//
	// A message whose ID the stream already holds (and has not expired) is
	// not stored again: its result is the original's Seq with
	// Duplicate=true. A retry after an error is therefore safe.
	//
	// With a ctx already done, Append stores nothing and returns ctx's
	// error. If ctx ends while Append waits, it returns ctx's error and the
	// messages may or may not be stored: retry with the same IDs.
	Append(ctx context.Context, stream string, msgs ...Message) ([]Appended, error)

	// AppendMulti appends to several streams at once: each StreamAppend as
	// Append would, in one durable write (one sync) for all of them. It
	// returns results[i][j] for appends[i].Msgs[j]. A stream may appear
	// more than once; its parts are appended in order. If it returns an
	// error, some parts may or may not be stored: retry with the same ids.
	AppendMulti(ctx context.Context, appends []StreamAppend) ([][]Appended, error)

	// Range returns up to limit (>= 1) messages with Seq > after, in
	// sequence order, skipping those expired at the store's Now, and the
	// epoch of the stream they were read from. If messages after after were
	// trimmed (after+1 < first, see Head), it returns ErrTrimmed together
	// with the messages it still holds from first on.
	Range(ctx context.Context, stream string, after uint64, limit int) (msgs []Message, epoch string, err error)

	// Head returns the stream's epoch, its first sequence and its last.
	// For a stream never appended to, the epoch is the one its first
	// append will get, so that a reader positioned at (epoch, 0) before
	// then resumes from the start. last is the sequence of the newest message ever appended (0 for
	// a stream never appended to). first is one past the newest trimmed
	// sequence: every message from first to last is held unless it expired.
	// A stream whose history was trimmed whole has first == last+1; a new
	// stream has first 1 and last 0.
	Head(ctx context.Context, stream string) (epoch string, first, last uint64, err error)

	// Ack moves device's cursor on stream forward to seq; a cursor never
	// moves backwards (a smaller seq is not an error and changes nothing).
	// The store does not check seq against the stream's last: the caller
	// does. Cursors may be written without a sync of their own: after a
	// crash a cursor may be behind, which only causes redelivery.
	Ack(ctx context.Context, stream, device string, seq uint64) error

	// Cursor returns device's cursor on stream, 0 if it never acked.
	Cursor(ctx context.Context, stream, device string) (uint64, error)

	// Lookup returns the sequence number of the message of stream with id,
	// if the stream still holds it and it has not expired.
	Lookup(ctx context.Context, stream, id string) (seq uint64, found bool, err error)

	// Trim bounds stream's history: it drops messages older than the newest
	// keep sequences (keep counts sequence numbers, expired ones included)
	// and messages accepted more than maxAge before Now, oldest first up to
	// the first younger one. keep 0 and maxAge 0 mean no limit. The first
	// sequence moves past what was dropped. Trim may run while appends go
	// on.
	Trim(ctx context.Context, stream string, keep int, maxAge time.Duration) error

	// Expire removes the messages of every stream that expired at Now and
	// their id index entries, and returns how many it removed. It may run in
	// the background while appends go on.
	Expire(ctx context.Context) (removed int, err error)

	// Health returns nil while the store can take writes, and otherwise an
	// error wrapping ErrUnavailable (or ErrClosed) that says why.
	Health() error

	// Close releases the store. Calls after Close return ErrClosed; Close
	// itself may be called more than once.
	Close() error
}

// CheckName returns an ErrInvalid error if name is empty or longer than
// MaxNameLen. what names the argument in the message.
func CheckName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalid, what)
	}
	return CheckID(what, name)
}

// CheckID returns an ErrInvalid error if id is longer than MaxNameLen.
// Unlike CheckName it accepts the empty string.
func CheckID(what, id string) error {
	if len(id) > MaxNameLen {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalid, what, MaxNameLen)
	}
	return nil
}

// CheckAppend validates Append's arguments: the stream name and every
// message id.
func CheckAppend(stream string, msgs []Message) error {
	if err := CheckName("stream", stream); err != nil {
		return err
	}
	for i := range msgs {
		if err := CheckID("message id", msgs[i].ID); err != nil {
			return err
		}
	}
	return nil
}

// CheckAppendMulti validates AppendMulti's arguments: CheckAppend for
// every part.
func CheckAppendMulti(appends []StreamAppend) error {
	for i := range appends {
		if err := CheckAppend(appends[i].Stream, appends[i].Msgs); err != nil {
			return fmt.Errorf("append %d: %w", i, err)
		}
	}
	return nil
}

// CheckLimit returns an ErrInvalid error if limit is below 1.
func CheckLimit(limit int) error {
	if limit < 1 {
		return fmt.Errorf("%w: limit %d, want >= 1", ErrInvalid, limit)
	}
	return nil
}

// NewEpoch returns a new random epoch: 32 hex digits.
func NewEpoch() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b[:])
}
