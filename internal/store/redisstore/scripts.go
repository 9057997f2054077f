package redisstore

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// The stream scripts all take the same keys, in this order:
//
//	KEYS[1] meta    hash: epoch, last, mark, gen, idx
//	KEYS[2] msgs    stream: one entry per held message, id 0-<seq>
//	KEYS[3] ids     hash: message id → "<seq>" or "<seq>:<expiry>"
//	KEYS[4] acks    hash: device → cursor
//	KEYS[5] gen     string: the generation of the data (see boot)
//	KEYS[6] expiry  sorted set: "<seq>:<stream>" by expiry in ms
//
// and begin with the same arguments:
//
//	ARGV[1] a new random epoch, taken if the stream needs one
//	ARGV[2] now: Unix seconds
//	ARGV[3] now: nanoseconds within the second
//
// A stream entry's fields are i (message id, possibly empty), p (payload),
// t (acceptance time, Unix nanoseconds) and, for a message that expires,
// e (expiry, "<Unix seconds>.<9-digit nanoseconds>", so that Lua, whose
// numbers are doubles, compares it exactly).
//
// Redis runs a script alone: nothing else touches the keys while it runs,
// which is what makes every operation atomic without a lock of our own.
const prologue = `
local K_META, K_MSGS, K_IDS, K_ACKS, K_GEN, K_EXP = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local NOW_S, NOW_N = tonumber(ARGV[2]), tonumber(ARGV[3])

local function itoa(n) return string.format('%d', n) end
local function seqof(entry_id) return tonumber(string.sub(entry_id, 3)) end

-- expired reports whether expiry e ("sec.nsec"; nil or '' for never) is
-- at or before now.
local function expired(e)
  if not e or e == '' then return false end
  local s, n = string.match(e, '^(-?%d+)%.(%d+)$')
  s, n = tonumber(s), tonumber(n)
  return s < NOW_S or (s == NOW_S and n <= NOW_N)
end

-- field returns the value of f in a stream entry's field list.
local function field(fields, f)
  for i = 1, #fields, 2 do
    if fields[i] == f then return fields[i + 1] end
  end
  return nil
end

-- maxval returns the largest number a hash's values begin with.
local function maxval(key)
  local m = 0
  for _, v in ipairs(redis.call('HVALS', key)) do
    local n = tonumber(string.match(v, '^%d+')) or 0
    if n > m then m = n end
  end
  return m
end

-- index_all rebuilds the id index from the held messages.
local function index_all()
  local from = '-'
  while true do
    local batch = redis.call('XRANGE', K_MSGS, from, '+', 'COUNT', 1000)
    for _, en in ipairs(batch) do
      local id = field(en[2], 'i')
      if id and id ~= '' then
        local v = string.sub(en[1], 3)
        local e = field(en[2], 'e')
        if e then v = v .. ':' .. e end
        redis.call('HSET', K_IDS, id, v)
      end
      from = '(' .. en[1]
    end
    if #batch < 1000 then break end
  end
  redis.call('HSET', K_IDS, '', '0')
  redis.call('HSET', K_META, 'idx', '1')
end

-- ensure returns the stream's state {epoch, last, mark, idx}. It creates
-- the meta of a new stream with the epoch ARGV[1]. It takes ARGV[1] as a
-- new epoch when it finds that data of the stream was lost:
--   * the meta is missing but messages, ids or cursors exist: the stream
--     continues after the highest seq any of them shows; first is the
--     oldest message still held;
--   * messages after the mark should be held but the stream key is gone:
--     nothing is held (mark = last), seqs continue after last;
--   * the meta was written under another generation: Redis restarted in
--     a configuration that can lose acknowledged writes, so the data may
--     have rolled back (see boot).
-- An id index that vanished while its messages are held is rebuilt from
-- them: nothing a reader was owed is lost, so the epoch stays.
local function ensure()
  local gen = redis.call('GET', K_GEN) or '0'
  local m = redis.call('HMGET', K_META, 'epoch', 'last', 'mark', 'gen', 'idx')
  if not m[1] then
    local has_msgs = redis.call('EXISTS', K_MSGS) == 1
    local has_ids = redis.call('EXISTS', K_IDS) == 1
    local has_acks = redis.call('EXISTS', K_ACKS) == 1
    local last, mark = 0, 0
    if has_msgs then
      local info = redis.call('XINFO', 'STREAM', K_MSGS)
      for i = 1, #info, 2 do
        if info[i] == 'last-generated-id' then last = seqof(info[i + 1]) end
      end
    end
    if has_ids then last = math.max(last, maxval(K_IDS)) end
    if has_acks then last = math.max(last, maxval(K_ACKS)) end
    mark = last
    if has_msgs then
      local first = redis.call('XRANGE', K_MSGS, '-', '+', 'COUNT', 1)
      if #first > 0 then mark = seqof(first[1][1]) - 1 end
    end
    redis.call('HSET', K_META, 'epoch', ARGV[1], 'last', itoa(last), 'mark', itoa(mark), 'gen', gen)
    local idx = false
    if has_ids then
      redis.call('HSET', K_META, 'idx', '1')
      idx = true
    elseif mark < last then
      index_all()
      idx = true
    end
    return {epoch = ARGV[1], last = last, mark = mark, idx = idx}
  end
  local st = {epoch = m[1], last = tonumber(m[2]), mark = tonumber(m[3]), idx = m[5] == '1'}
  local renew = m[4] ~= gen
  if st.last > st.mark and redis.call('EXISTS', K_MSGS) == 0 then
    st.mark = st.last
    renew = true
    redis.call('DEL', K_IDS)
    redis.call('HSET', K_META, 'idx', '0')
    st.idx = false
  elseif st.idx and redis.call('EXISTS', K_IDS) == 0 then
    index_all()
  end
  if renew then
    st.epoch = ARGV[1]
    redis.call('HSET', K_META, 'epoch', st.epoch, 'mark', itoa(st.mark), 'gen', gen)
  end
  return st
end

-- held returns the seq of the held, unexpired message with id, or nil.
local function held(id, mark)
  local v = redis.call('HGET', K_IDS, id)
  if not v then return nil end
  local s, e = string.match(v, '^(%d+):?(.*)$')
  s = tonumber(s)
  if s <= mark or expired(e) then return nil end
  return s
end
`

// appendLua appends a batch of messages to one stream.
//
//	ARGV[4] the stream's name (for expiry index members)
//	ARGV[5] now in Unix nanoseconds: the time of messages without one
//	ARGV[6...] per message: id, payload, time ('' for now), expiry ('' for never)
//
// It returns {epoch, r1, r2, ...}: r is the message's new seq, or minus
// the seq of the held message with the same id.
const appendLua = prologue + `
local st = ensure()
local last, mark = st.last, st.mark
local out = {st.epoch}
for b = 6, #ARGV, 4 do
  local id, p, t, e = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local dup = nil
  if id ~= '' then dup = held(id, mark) end
  if dup then
    out[#out + 1] = -dup
  else
    last = last + 1
    local seq = itoa(last)
    if t == '' then t = ARGV[5] end
    if e == '' then
      redis.call('XADD', K_MSGS, '0-' .. seq, 'i', id, 'p', p, 't', t)
    else
      redis.call('XADD', K_MSGS, '0-' .. seq, 'i', id, 'p', p, 't', t, 'e', e)
      local s, n = string.match(e, '^(-?%d+)%.(%d+)$')
      redis.call('ZADD', K_EXP, itoa(tonumber(s) * 1000 + math.floor(tonumber(n) / 1000000)), seq .. ':' .. ARGV[4])
    end
    if id ~= '' then
      if not st.idx then
        redis.call('HSET', K_IDS, '', '0')
        redis.call('HSET', K_META, 'idx', '1')
        st.idx = true
      end
      local v = seq
      if e ~= '' then v = v .. ':' .. e end
      redis.call('HSET', K_IDS, id, v)
    end
    out[#out + 1] = last
  end
end
if last ~= st.last then redis.call('HSET', K_META, 'last', itoa(last)) end
return out
`

// headLua returns {epoch, first, last}.
const headLua = prologue + `
local st = ensure()
return {st.epoch, itoa(st.mark + 1), itoa(st.last)}
`

// rangeLua reads held, unexpired messages after a seq.
//
//	ARGV[4] after
//	ARGV[5] limit: how many messages to return at most
//	ARGV[6] budget: how many entries to look at at most
//
// It returns {epoch, mark, last, scanned, done, entry...}: scanned is the
// seq of the last entry looked at (after if none), done is 1 if no entry
// after it exists; each entry is {"0-<seq>", {field, value, ...}}.
const rangeLua = prologue + `
local st = ensure()
local out = {st.epoch, itoa(st.mark), itoa(st.last), '', 0}
local after, limit, budget = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
local got = 0
while got < limit and budget > 0 do
  local want = math.min(limit - got, budget)
  local batch = redis.call('XRANGE', K_MSGS, '(0-' .. after, '+', 'COUNT', want)
  for _, en in ipairs(batch) do
    after = string.sub(en[1], 3)
    if not expired(field(en[2], 'e')) then
      out[#out + 1] = en
      got = got + 1
    end
  end
  budget = budget - #batch
  if #batch < want then
    out[5] = 1
    break
  end
end
out[4] = after
return out
`

// lookupLua returns the seq of the held, unexpired message with id
// ARGV[4], or 0.
const lookupLua = prologue + `
local st = ensure()
return held(ARGV[4], st.mark) or 0
`

// ackLua moves device ARGV[4]'s cursor forward to ARGV[5].
const ackLua = prologue + `
ensure()
local cur = tonumber(redis.call('HGET', K_ACKS, ARGV[4]) or '0')
if tonumber(ARGV[5]) > cur then redis.call('HSET', K_ACKS, ARGV[4], ARGV[5]) end
return 0
`

// trimLua drops the messages up to a seq, at most a chunk of them per
// call, and moves the mark past what it dropped.
//
//	ARGV[4] cut: the newest seq to drop
//	ARGV[5] the stream's name (for expiry index members)
//	ARGV[6] chunk
//
// It returns 1 if messages up to cut may remain, 0 when done. A stream
// without meta is left alone: the next operation that ensures the meta
// finds out what happened to it.
const trimLua = prologue + `
local m = redis.call('HMGET', K_META, 'last', 'mark')
if not m[1] then return 0 end
local last, mark = tonumber(m[1]), tonumber(m[2])
local cut = math.min(tonumber(ARGV[4]), last)
if cut <= mark then return 0 end
local chunk = tonumber(ARGV[6])
local batch = redis.call('XRANGE', K_MSGS, '-', '0-' .. itoa(cut), 'COUNT', chunk)
local more = 0
if #batch == chunk then
  cut = seqof(batch[#batch][1])
  more = 1
end
for _, en in ipairs(batch) do
  local seq = string.sub(en[1], 3)
  local id = field(en[2], 'i')
  if id and id ~= '' then
    local v = redis.call('HGET', K_IDS, id)
    if v and string.match(v, '^%d+') == seq then redis.call('HDEL', K_IDS, id) end
  end
  if field(en[2], 'e') then redis.call('ZREM', K_EXP, seq .. ':' .. ARGV[5]) end
end
redis.call('XTRIM', K_MSGS, 'MINID', '0-' .. itoa(cut + 1))
if cut > mark then redis.call('HSET', K_META, 'mark', itoa(cut)) end
return more
`

// expireLua removes the expired messages among the given seqs of one
// stream, their id index entries and their expiry index members.
//
//	ARGV[4] the stream's name
//	ARGV[5...] seqs named by the expiry index
//
// It returns {removed, kept}: kept counts messages not expired yet (their
// expiry is in the current millisecond); a member whose message is gone
// (trimmed, lost) is dropped and not counted.
const expireLua = prologue + `
local removed, kept = 0, 0
for i = 5, #ARGV do
  local seq = ARGV[i]
  local member = seq .. ':' .. ARGV[4]
  local en = redis.call('XRANGE', K_MSGS, '0-' .. seq, '0-' .. seq)
  local e = nil
  if #en > 0 then e = field(en[1][2], 'e') end
  if not e then
    redis.call('ZREM', K_EXP, member)
  elseif expired(e) then
    redis.call('XDEL', K_MSGS, '0-' .. seq)
    local id = field(en[1][2], 'i')
    if id and id ~= '' then
      local v = redis.call('HGET', K_IDS, id)
      if v and string.match(v, '^%d+') == seq then redis.call('HDEL', K_IDS, id) end
    end
    redis.call('ZREM', K_EXP, member)
    removed = removed + 1
  else
    kept = kept + 1
  end
end
return {removed, kept}
`

// bootLua records which Redis process serves the data, and bumps the
// generation when it changed and acknowledged writes may have been lost
// on the way: every stream then takes a new epoch on its next use.
//
//	KEYS[1] boot: "<run_id>:<durable>", the last process seen
//	KEYS[2] gen
//	ARGV[1] run_id of the process now
//	ARGV[2] 1 if it is durable (appendonly yes, appendfsync always, not
//	        promoted from a replica)
//
// The generation is kept when the previous process and this one are both
// durable: everything they acknowledged is on disk. It is bumped when
// either was not, and when the previous one is unknown but a generation
// exists (the boot key alone was lost). It returns 1 if it bumped, 2 for
// a new namespace (neither key exists: the generation starts at 1), 0
// otherwise.
const bootLua = `
local cur = redis.call('GET', KEYS[1])
local now = ARGV[1] .. ':' .. ARGV[2]
if cur == now then return 0 end
redis.call('SET', KEYS[1], now)
if not cur and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], '1')
  return 2
end
local prev_id, prev_durable = nil, nil
if cur then prev_id, prev_durable = string.match(cur, '^(.*):(%d)$') end
if prev_id == ARGV[1] then return 0 end
if prev_durable == '1' and ARGV[2] == '1' then return 0 end
redis.call('INCR', KEYS[2])
return 1
`

// script is a Lua script and its SHA1, by which EVALSHA calls it.
type script struct {
	src, hash string
}

func newScript(src string) script {
	h := sha1.Sum([]byte(src))
	return script{src: src, hash: hex.EncodeToString(h[:])}
}

var (
	appendScript = newScript(appendLua)
	headScript   = newScript(headLua)
	rangeScript  = newScript(rangeLua)
	lookupScript = newScript(lookupLua)
	ackScript    = newScript(ackLua)
	trimScript   = newScript(trimLua)
	expireScript = newScript(expireLua)
	bootScript   = newScript(bootLua)
)

// streamScripts returns the scripts loaded only after boot has run on the
// Redis process (see Store.reload).
func streamScripts() []script {
	return []script{appendScript, headScript, rangeScript, lookupScript, ackScript, trimScript, expireScript}
}

// isNoScript reports whether err is Redis saying it does not have a script
// (it restarted, or SCRIPT FLUSH): the script did not run.
func isNoScript(err error) bool {
	return err != nil && redis.HasErrorPrefix(err, "NOSCRIPT")
}

// eval runs a stream script by its hash. If Redis does not have it, the
// script did not run: the store checks the Redis process (boot), loads the
// scripts and runs it again.
func (s *Store) eval(ctx context.Context, sc script, keys []string, args []any) (any, error) {
	for attempt := 0; ; attempt++ {
		seen := s.loads.Load()
		v, err := s.rdb.EvalSha(ctx, sc.hash, keys, args...).Result()
		if !isNoScript(err) || attempt == 2 {
			return v, err
		}
		if err := s.reload(ctx, seen); err != nil {
			return nil, err
		}
	}
}

// reload runs boot on the Redis process and loads the stream scripts into
// it, unless another caller did so since seen (the count of loads when the
// caller found a script missing). Scripts are loaded only after boot: so
// no stream script runs on a Redis process before the generation has been
// checked there.
func (s *Store) reload(ctx context.Context, seen uint64) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.loads.Load() != seen {
		return nil
	}
	if err := s.boot(ctx); err != nil {
		return err
	}
	scripts := streamScripts()
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(scripts))
	for i, sc := range scripts {
		cmds[i] = pipe.ScriptLoad(ctx, sc.src)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("loading scripts: %w", err)
	}
	for i, sc := range scripts {
		if got := cmds[i].Val(); !strings.EqualFold(got, sc.hash) {
			return fmt.Errorf("loading scripts: Redis returned hash %q for %q", got, sc.hash)
		}
	}
	s.loads.Add(1)
	return nil
}

// boot reads the Redis process's run id and durability and runs bootLua.
// A process that was promoted from replica to primary (a failover: INFO
// replication shows the replication id it took over as master_replid2)
// counts as not durable there: what the old primary acknowledged before
// replicating it is lost whatever either fsynced.
func (s *Store) boot(ctx context.Context) error {
	pipe := s.rdb.Pipeline()
	server := pipe.Info(ctx, "server")
	repl := pipe.Info(ctx, "replication")
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("INFO: %w", err)
	}
	info := server.Val()
	runID := infoField(info, "run_id")
	if runID == "" {
		return fmt.Errorf("INFO server has no run_id")
	}
	if v := infoField(info, "redis_version"); !versionAtLeast(v, 6, 2) {
		return fmt.Errorf("redis %s: the store needs 6.2 or later (XRANGE with exclusive ranges, XTRIM MINID)", v)
	}
	d := s.readDurability(ctx)
	s.durability.Store(&d)
	durable := "0"
	if d.Durable && strings.Trim(infoField(repl.Val(), "master_replid2"), "0") == "" {
		durable = "1"
	}
	bumped, err := s.rdb.Eval(ctx, bootScript.src, []string{s.keys.boot, s.keys.gen}, runID, durable).Int()
	if err != nil {
		return fmt.Errorf("boot script: %w", err)
	}
	if bumped == 1 {
		s.bumps.Add(1)
	}
	return nil
}

// infoField returns the value of name in an INFO reply.
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), name+":"); ok {
			return v
		}
	}
	return ""
}

// versionAtLeast reports whether version v ("7.0.15") is major.minor or
// later. An unparsable version passes: the scripts will say what fails.
func versionAtLeast(v string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(v, "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma > major || ma == major && mi >= minor
}
