// Package logging provides an asynchronous slog.Handler that never blocks
// the caller: records are queued to a bounded buffer and written by one
// goroutine; when the buffer is full they are dropped and counted.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
)

// Sentinel errors returned (wrapped) by ParseLevel, ParseFormat and New.
var (
	// ErrUnknownLevel means a level name is not debug, info, warn or error.
	ErrUnknownLevel = errors.New("logging: unknown level")
	// ErrUnknownFormat means a format name is not text or json.
	ErrUnknownFormat = errors.New("logging: unknown format")
)

// ParseLevel parses "debug", "info", "warn" or "error" (any case).
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("%w %q (want debug, info, warn or error)", ErrUnknownLevel, s)
}

// ParseFormat checks that s is "text" or "json" (any case) and returns it in
// lower case.
func ParseFormat(s string) (string, error) {
	switch f := strings.ToLower(s); f {
	case "text", "json":
		return f, nil
	}
	return "", fmt.Errorf("%w %q (want text or json)", ErrUnknownFormat, s)
}

// New returns a logger writing to w in the given level and format through an
// Async handler queueing up to buffer records. The caller must Close the
// returned Async to flush it.
func New(w io.Writer, level, format string, buffer int) (*slog.Logger, *Async, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	v := new(slog.LevelVar)
	v.Set(lvl)
	return NewLeveled(w, v, format, buffer)
}

// NewLeveled is New with a level the caller can change while the logger
// is in use (level.Set, for a configuration reload).
func NewLeveled(w io.Writer, level *slog.LevelVar, format string, buffer int) (*slog.Logger, *Async, error) {
	f, err := ParseFormat(format)
	if err != nil {
		return nil, nil, err
	}
	opts := &slog.HandlerOptions{Level: level}
	var inner slog.Handler
	if f == "json" {
		inner = slog.NewJSONHandler(w, opts)
	} else {
		inner = slog.NewTextHandler(w, opts)
	}
	a := NewAsync(inner, buffer)
	return slog.New(a), a, nil
}

// Async is a slog.Handler that hands records to a background goroutine. It is
// safe for concurrent use. Handlers derived with WithAttrs and WithGroup share
// its queue, drop counter and goroutine.
type Async struct {
	inner slog.Handler
	q     *queue
}

// entry is one queued record with the handler that must write it.
type entry struct {
	ctx context.Context
	h   slog.Handler
	r   slog.Record
}

// queue is the state shared by an Async and the handlers derived from it.
type queue struct {
	ch      chan entry
	dropped atomic.Uint64

	mu     sync.RWMutex // write-locked only to set closed
	closed bool

	stop      chan struct{} // closed by Close: drain and exit
	abort     chan struct{} // closed when a Close ctx ends: discard and exit
	done      chan struct{} // closed when the goroutine has exited
	stopOnce  sync.Once
	abortOnce sync.Once
}

// NewAsync returns an Async writing to inner through a queue of buffer
// records (at least 1) and starts its goroutine; Close stops it.
func NewAsync(inner slog.Handler, buffer int) *Async {
	q := &queue{
		ch:    make(chan entry, max(buffer, 1)),
		stop:  make(chan struct{}),
		abort: make(chan struct{}),
		done:  make(chan struct{}),
	}
	go q.run()
	return &Async{inner: inner, q: q}
}

// Enabled reports whether the inner handler handles records at level.
func (a *Async) Enabled(ctx context.Context, level slog.Level) bool {
	return a.inner.Enabled(ctx, level)
}

// Handle queues a clone of r without blocking. If the queue is full or the
// handler is closed the record is dropped and counted (see Dropped); Handle
// always returns nil. The inner handler later receives ctx without its
// cancellation.
func (a *Async) Handle(ctx context.Context, r slog.Record) error {
	if ctx == nil {
		ctx = context.Background()
	}
	e := entry{ctx: context.WithoutCancel(ctx), h: a.inner, r: r.Clone()}
	a.q.mu.RLock()
	defer a.q.mu.RUnlock()
	if a.q.closed {
		a.q.dropped.Add(1)
		return nil
	}
	select {
	case a.q.ch <- e:
	default:
		a.q.dropped.Add(1)
	}
	return nil
}

// WithAttrs returns a handler sharing a's queue whose inner handler is
// a's inner handler with attrs added.
func (a *Async) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return a
	}
	return &Async{inner: a.inner.WithAttrs(attrs), q: a.q}
}

// WithGroup returns a handler sharing a's queue whose inner handler is
// a's inner handler with the group opened.
func (a *Async) WithGroup(name string) slog.Handler {
	if name == "" {
		return a
	}
	return &Async{inner: a.inner.WithGroup(name), q: a.q}
}

// Dropped returns how many records have been dropped because the queue was
// full, the handler was closed, or Close gave up before writing them.
func (a *Async) Dropped() uint64 {
	return a.q.dropped.Load()
}

// Close stops accepting records, waits until the queued ones are written and
// the goroutine has exited, and returns nil. If ctx ends first, the records
// not yet written are dropped and Close returns ctx's error wrapped; the
// goroutine then exits as soon as the inner handler returns from the record
// it is writing, and a later Close waits for that. Close applies to every
// handler sharing the queue and may be called more than once.
func (a *Async) Close(ctx context.Context) error {
	q := a.q
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.stopOnce.Do(func() { close(q.stop) })

	select {
	case <-q.done:
		return nil
	default:
	}
	select {
	case <-q.done:
		return nil
	case <-ctx.Done():
		q.abortOnce.Do(func() { close(q.abort) })
		return fmt.Errorf("logging: close: %w", ctx.Err())
	}
}

// run writes queued records until stopped, then drains the queue. stop is
// checked first so that, once Close has begun, every record goes through
// drain and its abort check.
func (q *queue) run() {
	defer close(q.done)
	for {
		select {
		case <-q.stop:
			q.drain()
			return
		default:
		}
		select {
		case e := <-q.ch:
			q.write(e)
		case <-q.stop:
		}
	}
}

// drain writes the records left after Close, unless aborted. No record can
// be added once stop is closed, so an empty queue means done.
func (q *queue) drain() {
	for {
		select {
		case <-q.abort:
			q.dropped.Add(uint64(len(q.ch)))
			return
		default:
		}
		select {
		case e := <-q.ch:
			q.write(e)
		default:
			return
		}
	}
}

// write passes e to its handler. Errors are ignored: there is nowhere
// better to report a failure to log.
func (q *queue) write(e entry) {
	_ = e.h.Handle(e.ctx, e.r)
}
