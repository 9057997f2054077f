package registry

// The Lua scripts of the Redis registry. Each runs atomically in Redis, so
// a check and the update it decides are one step for every node.
//
// Keys, under the prefix P (see docs/architecture.md, "Presence in a
// cluster"):
//
//	P u:<app> <user>      hash: device → session (JSON, wireSession)
//	P n:<node>            hash: inc, info; the node's lease (PEXPIRE)
//	P nodes               hash: node → incarnation whose session set exists
//	P s:<node> <inc>      set: "<app> <user> <device>" of that incarnation's sessions
//
// Names (apps, users, devices, node ids) have no spaces, so a space
// separates them. A session is live while its node's lease exists with the
// session's incarnation ("inc"): a node that restarts with the same id
// gets a new incarnation, and the old one's sessions are dead at once.
// The scripts build keys of other nodes from the prefix (ARGV), so they
// need a standalone Redis (or a Sentinel-managed one), not Redis Cluster.

// claimLua claims a device.
//
//	KEYS: 1 user hash, 2 own session set, 3 own lease
//	ARGV: 1 device, 2 value, 3 id, 4 node, 5 inc, 6 replace ("1"),
//	      7 member, 8 prefix, 9 mode ("claim" or "reassert"), 10 conn id
//
// Returns {"ok"}, {"replaced", prev}, {"dup", holder}, or {"lease"} when
// this node's lease is not its own (expired or taken): nothing was written
// then. In "reassert" mode a session of this node's incarnation with a
// lower connection id gives way (it is the older of two local sessions of
// the device, being closed), and any other live holder wins.
const claimLua = `
if redis.call('HGET', KEYS[3], 'inc') ~= ARGV[5] then return {'lease'} end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local live = false
if cur then
  local c = cjson.decode(cur)
  if c.id ~= ARGV[3] then
    local mine = c.node == ARGV[4] and c.inc == ARGV[5]
    if mine then
      live = true
    else
      live = redis.call('HGET', ARGV[8] .. 'n:' .. c.node, 'inc') == c.inc
    end
    if live and ARGV[6] ~= '1' then
      if not (ARGV[9] == 'reassert' and mine and tonumber(c.conn) < tonumber(ARGV[10])) then
        return {'dup', cur}
      end
    end
    if not mine then
      redis.call('SREM', ARGV[8] .. 's:' .. c.node .. ' ' .. c.inc, ARGV[7])
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[7])
if live then return {'replaced', cur} end
return {'ok'}
`

// releaseLua removes a session if it is still its device's.
//
//	KEYS: 1 user hash, 2 own session set
//	ARGV: 1 device, 2 id, 3 member
//
// Returns 1 if it removed it, 0 if the device has another session or none.
const releaseLua = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and cjson.decode(cur).id == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[3])
  return 1
end
return 0
`

// lookupLua returns a user's live sessions as {device, value, ...}. It
// reads each node's lease once.
//
//	KEYS: 1 user hash
//	ARGV: 1 prefix
const lookupLua = `
local h = redis.call('HGETALL', KEYS[1])
local out, live = {}, {}
for i = 1, #h, 2 do
  local c = cjson.decode(h[i + 1])
  local k = c.node .. ' ' .. c.inc
  local ok = live[k]
  if ok == nil then
    ok = redis.call('HGET', ARGV[1] .. 'n:' .. c.node, 'inc') == c.inc
    live[k] = ok
  end
  if ok then
    out[#out + 1] = h[i]
    out[#out + 1] = h[i + 1]
  end
end
return out
`

// leaseLua renews this node's lease, or takes it at open (force).
//
//	KEYS: 1 own lease, 2 nodes hash
//	ARGV: 1 node, 2 inc, 3 info, 4 ttl (ms), 5 force ("1")
//
// Returns {state, lease inc before, nodes inc before}: state "ok" (the
// lease was ours), "new" (it had expired: this node's sessions may have
// been removed), "took" (force: another incarnation held it), or "taken"
// (not force: another incarnation holds it; nothing was written).
const leaseLua = `
local cur = redis.call('HGET', KEYS[1], 'inc')
if cur and cur ~= ARGV[2] and ARGV[5] ~= '1' then return {'taken', cur, ''} end
local old = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'inc', ARGV[2], 'info', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local state = 'ok'
if not cur then state = 'new' elseif cur ~= ARGV[2] then state = 'took' end
return {state, cur or '', old or ''}
`

// nodesLua lists the live nodes' info and the dead incarnations whose
// sessions are still to be removed: {{info, ...}, {node, inc, ...}}.
//
//	KEYS: 1 nodes hash
//	ARGV: 1 prefix
const nodesLua = `
local ns = redis.call('HGETALL', KEYS[1])
local live, dead = {}, {}
for i = 1, #ns, 2 do
  local l = redis.call('HMGET', ARGV[1] .. 'n:' .. ns[i], 'inc', 'info')
  if l[1] then live[#live + 1] = l[2] end
  if l[1] ~= ns[i + 1] then
    dead[#dead + 1] = ns[i]
    dead[#dead + 1] = ns[i + 1]
  end
end
return {live, dead}
`

// cleanupLua removes up to count sessions of a dead incarnation, and the
// incarnation's entry in the nodes hash once its set is empty. Any node
// may run it, several at once: it is idempotent.
//
//	KEYS: 1 the incarnation's session set, 2 nodes hash, 3 the node's lease
//	ARGV: 1 prefix, 2 node, 3 inc, 4 count
//
// Returns the number of members taken (more may remain), 0 when done, or
// -1 if the incarnation is live again (its lease was renewed).
const cleanupLua = `
if redis.call('HGET', KEYS[3], 'inc') == ARGV[3] then return -1 end
local n = tonumber(ARGV[4])
local ms = redis.call('SPOP', KEYS[1], n)
for _, m in ipairs(ms) do
  local u, d = string.match(m, '^(%S+ %S+) (%S+)$')
  if u then
    local k = ARGV[1] .. 'u:' .. u
    local v = redis.call('HGET', k, d)
    if v then
      local c = cjson.decode(v)
      if c.node == ARGV[2] and c.inc == ARGV[3] then redis.call('HDEL', k, d) end
    end
  end
end
if #ms < n then
  if redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then redis.call('HDEL', KEYS[2], ARGV[2]) end
  return 0
end
return #ms
`

// leaveLua gives up this node's lease at Close, if it is still its own.
//
//	KEYS: 1 own lease
//	ARGV: 1 inc
const leaveLua = `
if redis.call('HGET', KEYS[1], 'inc') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`
