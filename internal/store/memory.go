package store

import (
	"bytes"
	"context"
	"fmt"
	"hash/maphash"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

const numShards = 64

// MemoryOptions configures NewMemory.
type MemoryOptions struct {
	// Now is the clock for acceptance times, expiry and age trims; nil means
	// time.Now.
	Now func() time.Time
}

// Memory is an in-process Store. Its data and epoch live as long as the
// value: a restart loses every message and starts a new epoch, so clients
// resuming against it are told their positions are gone. Append returns as
// soon as the messages are in memory. Safe for concurrent use.
type Memory struct {
	now    func() time.Time
	epoch  string
	seed   maphash.Seed
	closed atomic.Bool
	shards [numShards]memShard
}

type memShard struct {
	mu      sync.RWMutex
	streams map[string]*memStream
}

// memStream is one stream. Streams are never removed: they hold the last
// sequence, which must not be reused.
type memStream struct {
	mu      sync.RWMutex
	last    uint64
	mark    uint64            // newest trimmed sequence; first is mark+1
	msgs    []Message         // held messages, by Seq, all > mark
	ids     map[string]uint64 // message id → Seq, for held messages
	cursors map[string]uint64
	nextExp time.Time // no held message expires before it; zero: none expires
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store with a new epoch.
func NewMemory(opts MemoryOptions) *Memory {
	m := &Memory{now: opts.Now, epoch: NewEpoch(), seed: maphash.MakeSeed()}
	if m.now == nil {
		m.now = time.Now
	}
	for i := range m.shards {
		m.shards[i].streams = make(map[string]*memStream)
	}
	return m
}

// stream returns the named stream, creating it if create is set; otherwise
// it returns nil for a stream that does not exist.
func (m *Memory) stream(name string, create bool) *memStream {
	sh := &m.shards[maphash.String(m.seed, name)%numShards]
	sh.mu.RLock()
	s := sh.streams[name]
	sh.mu.RUnlock()
	if s != nil || !create {
		return s
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s = sh.streams[name]; s == nil {
		s = &memStream{ids: make(map[string]uint64), cursors: make(map[string]uint64)}
		sh.streams[name] = s
	}
	return s
}

// check is the common prologue of every operation.
func (m *Memory) check(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if m.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Append implements Store.
func (m *Memory) Append(ctx context.Context, stream string, msgs ...Message) ([]Appended, error) {
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	if err := CheckAppend(stream, msgs); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	now := m.now()
	s := m.stream(stream, true)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.append(msgs, m.epoch, now), nil
}

// AppendMulti implements Store. The streams are locked in name order, so
// that concurrent calls cannot deadlock.
func (m *Memory) AppendMulti(ctx context.Context, appends []StreamAppend) ([][]Appended, error) {
	if err := m.check(ctx); err != nil {
		return nil, err
	}
	if err := CheckAppendMulti(appends); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(appends))
	for i := range appends {
		if len(appends[i].Msgs) > 0 {
			names = append(names, appends[i].Stream)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	streams := make(map[string]*memStream, len(names))
	for _, name := range names {
		s := m.stream(name, true)
		streams[name] = s
		s.mu.Lock()
		defer s.mu.Unlock()
	}
	now := m.now()
	results := make([][]Appended, len(appends))
	for i := range appends {
		if len(appends[i].Msgs) > 0 {
			results[i] = streams[appends[i].Stream].append(appends[i].Msgs, m.epoch, now)
		}
	}
	return results, nil
}

// append stores msgs at the end of s, whose epoch is epoch, and returns
// their results. The caller holds s.mu.
func (s *memStream) append(msgs []Message, epoch string, now time.Time) []Appended {
	res := make([]Appended, len(msgs))
	for i := range msgs {
		in := &msgs[i]
		if in.ID != "" {
			if seq, ok := s.lookup(in.ID, now); ok {
				res[i] = Appended{Epoch: epoch, Seq: seq, Duplicate: true}
				continue
			}
		}
		s.last++
		msg := Message{
			Seq:     s.last,
			ID:      in.ID,
			Payload: bytes.Clone(in.Payload),
			Time:    normTime(in.Time, now),
			Expires: normTime(in.Expires, time.Time{}),
		}
		s.msgs = append(s.msgs, msg)
		if msg.ID != "" {
			s.ids[msg.ID] = msg.Seq
		}
		if !msg.Expires.IsZero() && (s.nextExp.IsZero() || msg.Expires.Before(s.nextExp)) {
			s.nextExp = msg.Expires
		}
		res[i] = Appended{Epoch: epoch, Seq: msg.Seq}
	}
	return res
}

// normTime returns t in UTC without a monotonic reading, or def if t is
// zero. Stores keep times this way so that what Range returns does not
// depend on the implementation.
func normTime(t, def time.Time) time.Time {
	if t.IsZero() {
		t = def
		if t.IsZero() {
			return time.Time{}
		}
	}
	return time.Unix(0, t.UnixNano()).UTC()
}

// index returns the position in s.msgs of the first message with Seq > after.
func (s *memStream) index(after uint64) int {
	return sort.Search(len(s.msgs), func(i int) bool { return s.msgs[i].Seq > after })
}

// lookup returns the Seq of the held, unexpired message with id.
func (s *memStream) lookup(id string, now time.Time) (uint64, bool) {
	seq, ok := s.ids[id]
	if !ok {
		return 0, false
	}
	i := s.index(seq - 1)
	if i == len(s.msgs) || s.msgs[i].Seq != seq || s.msgs[i].Expired(now) {
		return 0, false
	}
	return seq, true
}

// forget drops the id index entry of msg if it points to msg.
func (s *memStream) forget(msg *Message) {
	if msg.ID != "" && s.ids[msg.ID] == msg.Seq {
		delete(s.ids, msg.ID)
	}
}

// Lookup implements Store.
func (m *Memory) Lookup(ctx context.Context, stream, id string) (uint64, bool, error) {
	if err := CheckName("stream", stream); err != nil {
		return 0, false, err
	}
	if err := m.check(ctx); err != nil {
		return 0, false, err
	}
	s := m.stream(stream, false)
	if s == nil || id == "" {
		return 0, false, nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	seq, ok := s.lookup(id, m.now())
	return seq, ok, nil
}

// Range implements Store.
func (m *Memory) Range(ctx context.Context, stream string, after uint64, limit int) ([]Message, string, error) {
	if err := m.check(ctx); err != nil {
		return nil, "", err
	}
	if err := CheckName("stream", stream); err != nil {
		return nil, "", err
	}
	if err := CheckLimit(limit); err != nil {
		return nil, "", err
	}
	s := m.stream(stream, false)
	if s == nil {
		return nil, m.epoch, nil
	}
	now := m.now()
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := s.index(after)
	var out []Message
	for ; i < len(s.msgs) && len(out) < limit; i++ {
		if !s.msgs[i].Expired(now) {
			out = append(out, s.msgs[i])
		}
	}
	if after < s.mark {
		return out, m.epoch, fmt.Errorf("%w: stream %q after %d, first is %d", ErrTrimmed, stream, after, s.mark+1)
	}
	return out, m.epoch, nil
}

// Head implements Store.
func (m *Memory) Head(ctx context.Context, stream string) (epoch string, first, last uint64, err error) {
	if err := m.check(ctx); err != nil {
		return "", 0, 0, err
	}
	if err := CheckName("stream", stream); err != nil {
		return "", 0, 0, err
	}
	s := m.stream(stream, false)
	if s == nil {
		return m.epoch, 1, 0, nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return m.epoch, s.mark + 1, s.last, nil
}

// Ack implements Store.
func (m *Memory) Ack(ctx context.Context, stream, device string, seq uint64) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	if err := CheckName("stream", stream); err != nil {
		return err
	}
	if err := CheckName("device", device); err != nil {
		return err
	}
	s := m.stream(stream, true)
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.cursors[device] {
		s.cursors[device] = seq
	}
	return nil
}

// Cursor implements Store.
func (m *Memory) Cursor(ctx context.Context, stream, device string) (uint64, error) {
	if err := m.check(ctx); err != nil {
		return 0, err
	}
	if err := CheckName("stream", stream); err != nil {
		return 0, err
	}
	if err := CheckName("device", device); err != nil {
		return 0, err
	}
	s := m.stream(stream, false)
	if s == nil {
		return 0, nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.cursors[device], nil
}

// Trim implements Store.
func (m *Memory) Trim(ctx context.Context, stream string, keep int, maxAge time.Duration) error {
	if err := m.check(ctx); err != nil {
		return err
	}
	if err := CheckName("stream", stream); err != nil {
		return err
	}
	if keep < 0 || maxAge < 0 {
		return fmt.Errorf("%w: trim keep %d, max age %v", ErrInvalid, keep, maxAge)
	}
	s := m.stream(stream, false)
	if s == nil {
		return nil
	}
	now := m.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := s.mark
	if keep > 0 && s.last > uint64(keep) {
		cut = max(cut, s.last-uint64(keep))
	}
	i := s.index(cut)
	if maxAge > 0 {
		oldest := now.Add(-maxAge)
		for ; i < len(s.msgs) && s.msgs[i].Time.Before(oldest); i++ {
			cut = s.msgs[i].Seq
		}
	}
	for j := range s.msgs[:i] {
		s.forget(&s.msgs[j])
	}
	clear(s.msgs[:i])
	s.msgs = s.msgs[i:]
	s.mark = cut
	return nil
}

// Expire implements Store.
func (m *Memory) Expire(ctx context.Context) (int, error) {
	if err := m.check(ctx); err != nil {
		return 0, err
	}
	now := m.now()
	removed := 0
	var streams []*memStream
	for i := range m.shards {
		sh := &m.shards[i]
		streams = streams[:0]
		sh.mu.RLock()
		for _, s := range sh.streams {
			streams = append(streams, s)
		}
		sh.mu.RUnlock()
		for _, s := range streams {
			removed += s.expire(now)
		}
		if err := ctx.Err(); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// expire removes s's messages expired at now and returns how many.
func (s *memStream) expire(now time.Time) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nextExp.IsZero() || now.Before(s.nextExp) {
		return 0
	}
	n := len(s.msgs)
	s.nextExp = time.Time{}
	s.msgs = slices.DeleteFunc(s.msgs, func(msg Message) bool {
		if msg.Expired(now) {
			s.forget(&msg)
			return true
		}
		if !msg.Expires.IsZero() && (s.nextExp.IsZero() || msg.Expires.Before(s.nextExp)) {
			s.nextExp = msg.Expires
		}
		return false
	})
	return n - len(s.msgs)
}

// Epoch returns the epoch of every stream of the store: new with each
// Memory.
func (m *Memory) Epoch() string { return m.epoch }

// Close implements Store. Every later call returns ErrClosed.
func (m *Memory) Close() error {
	m.closed.Store(true)
	return nil
}

// Health implements Store: a memory store can always take writes until it
// is closed.
func (m *Memory) Health() error {
	if m.closed.Load() {
		return ErrClosed
	}
	return nil
}
