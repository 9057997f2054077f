package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/herald-push/herald/internal/store"
)

// nowArgs returns the three arguments every stream script begins with: a
// new epoch and now, whole seconds and nanoseconds.
func nowArgs(now time.Time, extra int) []any {
	sec, nsec := splitNanos(now.UnixNano())
	args := make([]any, 3, 3+extra)
	args[0], args[1], args[2] = store.NewEpoch(), sec, nsec
	return args
}

// splitNanos splits Unix nanoseconds into seconds (rounded down) and
// nanoseconds in [0, 1e9).
func splitNanos(ns int64) (sec, nsec int64) {
	sec, nsec = ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return sec, nsec
}

// formatExpiry returns t as the scripts keep expiries: "sec.nsec".
func formatExpiry(t time.Time) string {
	sec, nsec := splitNanos(t.UnixNano())
	return fmt.Sprintf("%d.%09d", sec, nsec)
}

// parseExpiry reverses formatExpiry.
func parseExpiry(s string) (time.Time, error) {
	secs, nsecs, ok := strings.Cut(s, ".")
	sec, err1 := strconv.ParseInt(secs, 10, 64)
	nsec, err2 := strconv.ParseInt(nsecs, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return time.Time{}, fmt.Errorf("redisstore: bad expiry %q", s)
	}
	return time.Unix(sec, nsec).UTC(), nil
}

// appendArgs adds msgs to a script's arguments as appendLua takes them.
func appendArgs(args []any, msgs []store.Message) []any {
	for i := range msgs {
		m := &msgs[i]
		t, e := "", ""
		if !m.Time.IsZero() {
			t = strconv.FormatInt(m.Time.UnixNano(), 10)
		}
		if !m.Expires.IsZero() {
			e = formatExpiry(m.Expires)
		}
		args = append(args, m.ID, m.Payload, t, e)
	}
	return args
}

// appendCall is one append script call: one stream's messages, from one or
// more parts of an AppendMulti.
type appendCall struct {
	stream string
	msgs   []store.Message
	parts  []int // the AppendMulti parts, in order
	cmd    *redis.Cmd
}

// appendScriptArgs returns appendLua's arguments.
func appendScriptArgs(stream string, msgs []store.Message, now time.Time) []any {
	args := nowArgs(now, 2+4*len(msgs))
	args = append(args, stream, strconv.FormatInt(now.UnixNano(), 10))
	return appendArgs(args, msgs)
}

// appendResult decodes appendLua's reply for n messages.
func appendResult(v any, n int) ([]store.Appended, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) != n+1 {
		return nil, fmt.Errorf("redisstore: append script returned %T of %d items for %d messages", v, len(arr), n)
	}
	epoch, _ := arr[0].(string)
	res := make([]store.Appended, n)
	for i := range res {
		r, ok := arr[i+1].(int64)
		if !ok || r == 0 {
			return nil, fmt.Errorf("redisstore: append script returned %v for a seq", arr[i+1])
		}
		res[i] = store.Appended{Epoch: epoch, Seq: uint64(r)}
		if r < 0 {
			res[i] = store.Appended{Epoch: epoch, Seq: uint64(-r), Duplicate: true}
		}
	}
	return res, nil
}

// Append implements store.Store: one script stores the batch atomically.
func (s *Store) Append(ctx context.Context, stream string, msgs ...store.Message) ([]store.Appended, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err := store.CheckAppend(stream, msgs); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	v, err := s.eval(ctx, appendScript, s.keys.stream(stream), appendScriptArgs(stream, msgs, s.now()))
	if err != nil {
		return nil, s.wrap(ctx, "append", err)
	}
	s.ok()
	return appendResult(v, len(msgs))
}

// AppendMulti implements store.Store: one script call per stream (a
// stream's parts merged, in order) in one pipeline. Each stream's part is
// atomic; the call as a whole is not (see the package comment).
func (s *Store) AppendMulti(ctx context.Context, appends []store.StreamAppend) ([][]store.Appended, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if err := store.CheckAppendMulti(appends); err != nil {
		return nil, err
	}
	results := make([][]store.Appended, len(appends))
	var calls []*appendCall
	byStream := map[string]*appendCall{}
	for i := range appends {
		a := &appends[i]
		if len(a.Msgs) == 0 {
			continue
		}
		c := byStream[a.Stream]
		if c == nil {
			c = &appendCall{stream: a.Stream}
			byStream[a.Stream] = c
			calls = append(calls, c)
		}
		c.msgs = append(c.msgs, a.Msgs...)
		c.parts = append(c.parts, i)
	}
	if len(calls) == 0 {
		return results, nil
	}
	now := s.now()
	pending := calls
	for attempt := 0; len(pending) > 0; attempt++ {
		seen := s.loads.Load()
		pipe := s.rdb.Pipeline()
		for _, c := range pending {
			c.cmd = pipe.EvalSha(ctx, appendScript.hash, s.keys.stream(c.stream), appendScriptArgs(c.stream, c.msgs, now)...)
		}
		_, _ = pipe.Exec(ctx) // errors are read per command
		var again []*appendCall
		for _, c := range pending {
			err := c.cmd.Err()
			if isNoScript(err) && attempt < 2 {
				again = append(again, c) // it did not run
				continue
			}
			if err != nil {
				return nil, s.wrap(ctx, "append", err)
			}
		}
		if len(again) > 0 {
			if err := s.reload(ctx, seen); err != nil {
				return nil, s.wrap(ctx, "append", err)
			}
		}
		pending = again
	}
	s.ok()
	for _, c := range calls {
		res, err := appendResult(c.cmd.Val(), len(c.msgs))
		if err != nil {
			return nil, err
		}
		for _, i := range c.parts {
			n := len(appends[i].Msgs)
			results[i], res = res[:n:n], res[n:]
		}
	}
	return results, nil
}

// Head implements store.Store.
func (s *Store) Head(ctx context.Context, stream string) (epoch string, first, last uint64, err error) {
	if err := s.check(ctx); err != nil {
		return "", 0, 0, err
	}
	if err := store.CheckName("stream", stream); err != nil {
		return "", 0, 0, err
	}
	v, err := s.eval(ctx, headScript, s.keys.stream(stream), nowArgs(s.now(), 0))
	if err != nil {
		return "", 0, 0, s.wrap(ctx, "head", err)
	}
	s.ok()
	arr, ok := v.([]any)
	if !ok || len(arr) != 3 {
		return "", 0, 0, fmt.Errorf("redisstore: head script returned %v", v)
	}
	epoch, _ = arr[0].(string)
	first, err1 := parseSeq(arr[1])
	last, err2 := parseSeq(arr[2])
	if err1 != nil || err2 != nil {
		return "", 0, 0, fmt.Errorf("redisstore: head script returned %v", v)
	}
	return epoch, first, last, nil
}

func parseSeq(v any) (uint64, error) {
	s, _ := v.(string)
	return strconv.ParseUint(s, 10, 64)
}

// Range implements store.Store. The first script call reads the stream's
// epoch and mark with the first messages; further calls continue after
// the last entry looked at while expired messages kept the page short.
func (s *Store) Range(ctx context.Context, stream string, after uint64, limit int) ([]store.Message, string, error) {
	if err := s.check(ctx); err != nil {
		return nil, "", err
	}
	if err := store.CheckName("stream", stream); err != nil {
		return nil, "", err
	}
	if err := store.CheckLimit(limit); err != nil {
		return nil, "", err
	}
	keys := s.keys.stream(stream)
	now := s.now()
	var (
		out   []store.Message
		epoch string
		mark  uint64
		from  = after
	)
	for page := 0; ; page++ {
		want := min(limit-len(out), rangePage)
		args := append(nowArgs(now, 3), strconv.FormatUint(from, 10), want, want+rangeBudget)
		v, err := s.eval(ctx, rangeScript, keys, args)
		if err != nil {
			return nil, "", s.wrap(ctx, "range", err)
		}
		arr, ok := v.([]any)
		if !ok || len(arr) < 5 {
			return nil, "", fmt.Errorf("redisstore: range script returned %v", v)
		}
		ep, _ := arr[0].(string)
		if page == 0 {
			epoch = ep
			if mark, err = parseSeq(arr[1]); err != nil {
				return nil, "", fmt.Errorf("redisstore: range script returned mark %v", arr[1])
			}
		} else if ep != epoch {
			// The stream lost data between pages: what was read is of
			// another epoch. Read again from the start.
			return s.Range(ctx, stream, after, limit)
		}
		for _, en := range arr[5:] {
			m, err := decodeEntry(en)
			if err != nil {
				return nil, "", err
			}
			out = append(out, m)
		}
		scanned, err := parseSeq(arr[3])
		if err != nil {
			return nil, "", fmt.Errorf("redisstore: range script returned %v", arr[3])
		}
		done, _ := arr[4].(int64)
		if len(out) >= limit || done == 1 || scanned == from {
			break
		}
		from = scanned
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
	}
	s.ok()
	if after < mark {
		return out, epoch, fmt.Errorf("%w: stream %q after %d, first is %d", store.ErrTrimmed, stream, after, mark+1)
	}
	return out, epoch, nil
}

// decodeEntry decodes a stream entry {"0-<seq>", {field, value, ...}}.
func decodeEntry(v any) (store.Message, error) {
	var m store.Message
	en, ok := v.([]any)
	if !ok || len(en) != 2 {
		return m, fmt.Errorf("redisstore: bad stream entry %v", v)
	}
	id, _ := en[0].(string)
	seq, err := strconv.ParseUint(strings.TrimPrefix(id, "0-"), 10, 64)
	if err != nil {
		return m, fmt.Errorf("redisstore: bad stream entry id %q", id)
	}
	m.Seq = seq
	fields, _ := en[1].([]any)
	for i := 0; i+1 < len(fields); i += 2 {
		name, _ := fields[i].(string)
		val, _ := fields[i+1].(string)
		switch name {
		case "i":
			m.ID = val
		case "p":
			m.Payload = []byte(val)
		case "t":
			ns, err := strconv.ParseInt(val, 10, 64)
			if err != nil {
				return m, fmt.Errorf("redisstore: seq %d: bad time %q", seq, val)
			}
			m.Time = time.Unix(0, ns).UTC()
		case "e":
			if m.Expires, err = parseExpiry(val); err != nil {
				return m, err
			}
		}
	}
	return m, nil
}

// Lookup implements store.Store.
func (s *Store) Lookup(ctx context.Context, stream, id string) (uint64, bool, error) {
	if err := s.check(ctx); err != nil {
		return 0, false, err
	}
	if err := store.CheckName("stream", stream); err != nil {
		return 0, false, err
	}
	if err := store.CheckID("message id", id); err != nil {
		return 0, false, err
	}
	if id == "" {
		return 0, false, nil
	}
	v, err := s.eval(ctx, lookupScript, s.keys.stream(stream), append(nowArgs(s.now(), 1), id))
	if err != nil {
		return 0, false, s.wrap(ctx, "lookup", err)
	}
	s.ok()
	seq, _ := v.(int64)
	return uint64(seq), seq > 0, nil
}

// Ack implements store.Store. The cursor's max() is taken in the script,
// so concurrent acks from any node end at the largest. Seqs are compared
// as Lua numbers: exactly up to 2^53.
func (s *Store) Ack(ctx context.Context, stream, device string, seq uint64) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := store.CheckName("stream", stream); err != nil {
		return err
	}
	if err := store.CheckName("device", device); err != nil {
		return err
	}
	args := append(nowArgs(s.now(), 2), device, strconv.FormatUint(seq, 10))
	if _, err := s.eval(ctx, ackScript, s.keys.stream(stream), args); err != nil {
		return s.wrap(ctx, "ack", err)
	}
	s.ok()
	return nil
}

// Cursor implements store.Store.
func (s *Store) Cursor(ctx context.Context, stream, device string) (uint64, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	if err := store.CheckName("stream", stream); err != nil {
		return 0, err
	}
	if err := store.CheckName("device", device); err != nil {
		return 0, err
	}
	v, err := s.rdb.HGet(ctx, s.keys.stream(stream)[keyAcks], device).Result()
	if err == redis.Nil {
		s.ok()
		return 0, nil
	}
	if err != nil {
		return 0, s.wrap(ctx, "cursor", err)
	}
	s.ok()
	c, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("redisstore: cursor %q of %q on %q: %w", v, device, stream, err)
	}
	return c, nil
}

// Trim implements store.Store. It reads the stream's counters (and, for
// an age limit, the times of its oldest messages) to find the newest seq
// to drop, then drops up to it a chunk per script. What it decides stays
// right while appends go on: they only add messages after last.
func (s *Store) Trim(ctx context.Context, stream string, keep int, maxAge time.Duration) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := store.CheckName("stream", stream); err != nil {
		return err
	}
	if keep < 0 || maxAge < 0 {
		return fmt.Errorf("%w: trim keep %d, max age %v", store.ErrInvalid, keep, maxAge)
	}
	if keep == 0 && maxAge == 0 {
		return nil
	}
	keys := s.keys.stream(stream)
	meta, err := s.rdb.HMGet(ctx, keys[keyMeta], "last", "mark").Result()
	if err != nil {
		return s.wrap(ctx, "trim", err)
	}
	if meta[0] == nil {
		s.ok()
		return nil // a stream never used
	}
	last, err1 := parseSeq(meta[0])
	mark, err2 := parseSeq(meta[1])
	if err1 != nil || err2 != nil {
		return fmt.Errorf("redisstore: trim: stream %q has meta last %v, mark %v", stream, meta[0], meta[1])
	}
	cut := mark
	if keep > 0 && last > uint64(keep) {
		cut = max(cut, last-uint64(keep))
	}
	if maxAge > 0 {
		oldest := s.now().Add(-maxAge)
		if cut, err = s.ageCut(ctx, keys[keyMsgs], cut, oldest); err != nil {
			return s.wrap(ctx, "trim", err)
		}
	}
	if cut <= mark {
		s.ok()
		return nil
	}
	for {
		args := append(nowArgs(s.now(), 3), strconv.FormatUint(cut, 10), stream, trimChunk)
		v, err := s.eval(ctx, trimScript, keys, args)
		if err != nil {
			return s.wrap(ctx, "trim", err)
		}
		if more, _ := v.(int64); more == 0 {
			break
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	s.ok()
	return nil
}

// ageCut returns the seq of the newest message, after cut, in the run of
// messages accepted before oldest that begins right after cut (or cut).
func (s *Store) ageCut(ctx context.Context, msgs string, cut uint64, oldest time.Time) (uint64, error) {
	const page = 256
	for {
		entries, err := s.rdb.XRangeN(ctx, msgs, "(0-"+strconv.FormatUint(cut, 10), "+", page).Result()
		if err != nil {
			return 0, err
		}
		for _, en := range entries {
			seq, err := strconv.ParseUint(strings.TrimPrefix(en.ID, "0-"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("bad stream entry id %q", en.ID)
			}
			ts, _ := en.Values["t"].(string)
			ns, err := strconv.ParseInt(ts, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("seq %d: bad time %q", seq, ts)
			}
			if !time.Unix(0, ns).Before(oldest) {
				return cut, nil
			}
			cut = seq
		}
		if len(entries) < page {
			return cut, nil
		}
	}
}

// Expire implements store.Store. It reads the expiry index up to now, a
// chunk at a time, and removes the expired messages of each stream with
// one script per stream, in one pipeline per chunk.
func (s *Store) Expire(ctx context.Context) (int, error) {
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	now := s.now()
	ms := now.UnixNano() / 1e6
	if now.UnixNano()%1e6 < 0 {
		ms-- // round down
	}
	maxScore := strconv.FormatInt(ms, 10)
	removed, offset := 0, int64(0)
	for {
		members, err := s.rdb.ZRangeByScore(ctx, s.keys.expiry, &redis.ZRangeBy{Min: "-inf", Max: maxScore, Offset: offset, Count: expireChunk}).Result()
		if err != nil {
			return removed, s.wrap(ctx, "expire", err)
		}
		if len(members) == 0 {
			break
		}
		var order []string
		seqs := map[string][]any{}
		skipped := 0
		for _, m := range members {
			seq, stream, ok := strings.Cut(m, ":")
			if !ok {
				skipped++ // not ours; leave it
				continue
			}
			if seqs[stream] == nil {
				order = append(order, stream)
			}
			seqs[stream] = append(seqs[stream], seq)
		}
		r, kept, err := s.expireStreams(ctx, now, order, seqs)
		removed += r
		if err != nil {
			return removed, s.wrap(ctx, "expire", err)
		}
		offset += int64(kept + skipped)
		if len(members) < expireChunk {
			break
		}
		if err := ctx.Err(); err != nil {
			return removed, err
		}
	}
	s.ok()
	return removed, nil
}

// expireStreams runs expireLua for each stream in order, in one pipeline,
// and returns how many messages were removed and kept.
func (s *Store) expireStreams(ctx context.Context, now time.Time, order []string, seqs map[string][]any) (removed, kept int, err error) {
	pending := order
	for attempt := 0; len(pending) > 0; attempt++ {
		seen := s.loads.Load()
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(pending))
		for i, stream := range pending {
			args := append(nowArgs(now, 1+len(seqs[stream])), stream)
			args = append(args, seqs[stream]...)
			cmds[i] = pipe.EvalSha(ctx, expireScript.hash, s.keys.stream(stream), args...)
		}
		_, _ = pipe.Exec(ctx)
		var again []string
		for i, cmd := range cmds {
			if isNoScript(cmd.Err()) && attempt < 2 {
				again = append(again, pending[i])
				continue
			}
			v, err := cmd.Result()
			if err != nil {
				return removed, kept, err
			}
			arr, _ := v.([]any)
			if len(arr) != 2 {
				return removed, kept, fmt.Errorf("expire script returned %v", v)
			}
			r, _ := arr[0].(int64)
			k, _ := arr[1].(int64)
			removed += int(r)
			kept += int(k)
		}
		if len(again) > 0 {
			if err := s.reload(ctx, seen); err != nil {
				return removed, kept, err
			}
		}
		pending = again
	}
	return removed, kept, nil
}
