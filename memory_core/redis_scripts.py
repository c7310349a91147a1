"""The Lua scripts of ``RedisJobStore``: every state change of the shared queue is one of
these, atomic on the Redis server. ``ARGV[1]`` is always the key prefix (one hash tag)."""

_HELPERS = """
local P = ARGV[1]
local READY = P .. ':ready'
local LIVE = P .. ':live'
local DELAYED = P .. ':delayed'
local LEASES = P .. ':leases'
local DEAD = P .. ':dead'
local GROUP = 'learners'
local TRIM_BATCH = 1000
local function jk(id) return P .. ':job:' .. id end
local function sk(scope) return P .. ':scope:' .. scope end
local function drop_token(token)
  redis.call('XACK', READY, GROUP, token)
  redis.call('XDEL', READY, token)
  redis.call('ZREM', LEASES, token)
end
local function add_token(scope) redis.call('XADD', READY, '*', 'scope', scope) end
local RESULTS = P .. ':results'
local function rk(scope) return P .. ':rscope:' .. scope end
local function field(fields, name)
  for i = 1, #fields, 2 do if fields[i] == name then return fields[i + 1] end end
  return nil
end
local function forget_results(entries)
  for _, entry in ipairs(entries) do
    redis.call('XDEL', RESULTS, entry[1])
    local scope = field(entry[2], 'scope_key')
    if scope then
      local index = rk(scope)
      redis.call('XDEL', index, entry[1])
      if redis.call('XLEN', index) == 0 then redis.call('DEL', index) end
    end
  end
end
-- The log entry in the results stream, its id in its scope's index stream (the per-user
-- pages), then the retention: the oldest entries past ``kept``, and those older than
-- ``max_age`` seconds by Redis's clock (0: no age limit), at most TRIM_BATCH of each per call.
local function log_outcome(id, scope, status, attempts, enqueued_at, now, result, err, kind,
    kept, max_age)
  local entry = redis.call('XADD', RESULTS, '*', 'id', id, 'scope_key', scope,
    'status', status, 'attempts', attempts, 'enqueued_at', enqueued_at, 'finished_at', now,
    'result', result, 'error', err, 'kind', kind)
  redis.pcall('XADD', rk(scope), entry, 'r', '')
  local excess = redis.call('XLEN', RESULTS) - kept
  if excess > 0 then
    forget_results(redis.call('XRANGE', RESULTS, '-', '+', 'COUNT', math.min(excess, TRIM_BATCH)))
  end
  if max_age > 0 then
    local clock = redis.call('TIME')  -- the clock that stamped the entry ids
    local cutoff = math.floor((tonumber(clock[1]) - max_age) * 1000 + tonumber(clock[2]) / 1000)
    if cutoff > 0 then
      forget_results(redis.call('XRANGE', RESULTS, '-', tostring(cutoff - 1), 'COUNT', TRIM_BATCH))
    end
  end
end
local function scope_of(token)
  local entry = redis.call('XRANGE', READY, token, token)
  if #entry == 0 then return nil end
  return field(entry[1][2], 'scope')
end
"""

_ENQUEUE = """
local id, scope, payload, now, kind = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local key = jk(id)
if redis.call('EXISTS', key) == 1 then return 0 end
local seq = redis.call('INCR', P .. ':seq')
redis.call('HSET', key, 'scope', scope, 'payload', payload, 'attempts', 0,
  'enqueued_at', now, 'status', 'pending', 'seq', seq, 'kind', kind)
redis.call('ZADD', LIVE, now, id)
if redis.call('RPUSH', sk(scope), id) == 1 then add_token(scope) end
return 1
"""

_CLAIM = """
local owner, limit, lease, now_s, cap = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
  ARGV[5], tonumber(ARGV[6])
local now = tonumber(now_s)
local busy = {}
for i = 7, #ARGV do busy[ARGV[i]] = true end
for _, scope in ipairs(redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now_s, 'LIMIT', 0, 1000)) do
  redis.call('ZREM', DELAYED, scope)
  add_token(scope)
end
local out = {}
local function take(token, scope)
  local head = redis.call('LINDEX', sk(scope), 0)
  if not head then drop_token(token); return false end
  local key = jk(head)
  local attempts = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'status', 'leased', 'owner', owner, 'token', token)
  redis.call('ZADD', LEASES, tostring(now + lease), token)
  local f = redis.call('HMGET', key, 'payload', 'enqueued_at')
  out[#out + 1] = {head, scope, f[1], attempts, f[2]}
  return true
end
local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. now_s, 'LIMIT', 0, 1000)
for _, token in ipairs(expired) do
  if #out >= limit then break end
  local scope = scope_of(token)
  if not scope then
    drop_token(token)
  elseif not busy[scope] then
    redis.call('XCLAIM', READY, GROUP, owner, 0, token, 'JUSTID')
    take(token, scope)
  end
end
local in_flight = redis.call('ZCOUNT', LEASES, now_s, '+inf')
local skipped = {}
while #out < limit and (cap <= 0 or in_flight < cap) do
  local res = redis.call('XREADGROUP', 'GROUP', GROUP, owner, 'COUNT', 1, 'STREAMS', READY, '>')
  if not res then break end
  local entry = res[1][2][1]
  local scope = field(entry[2], 'scope')
  if not scope then
    drop_token(entry[1])
  elseif busy[scope] then
    skipped[#skipped + 1] = {entry[1], scope}
  elseif take(entry[1], scope) then
    in_flight = in_flight + 1
  end
end
for _, item in ipairs(skipped) do drop_token(item[1]); add_token(item[2]) end
return out
"""

_RENEW = """
local owner, lease, now = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
for i = 5, #ARGV do
  local f = redis.call('HMGET', jk(ARGV[i]), 'owner', 'status', 'token')
  if f[1] == owner and f[2] == 'leased' then
    redis.call('ZADD', LEASES, 'XX', tostring(now + lease), f[3])
  end
end
return 0
"""

_COMPLETE = """
local owner, id, status, result, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local kept, max_age = tonumber(ARGV[7]), tonumber(ARGV[8])
local key = jk(id)
local f = redis.call('HMGET', key, 'owner', 'status', 'token', 'scope', 'attempts', 'enqueued_at',
  'last_error', 'kind')
if f[1] ~= owner or f[2] ~= 'leased' then return 0 end
log_outcome(id, f[4], status, f[5], f[6], now, result, f[7] or '', f[8] or '', kept, max_age)
drop_token(f[3])
redis.call('DEL', key)
redis.call('ZREM', LIVE, id)
redis.call('LREM', sk(f[4]), 1, id)
if redis.call('LLEN', sk(f[4])) > 0 then add_token(f[4]) end
return 1
"""

_FAIL = """
local owner, id, err, retry_at, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local kept, max_age = tonumber(ARGV[7]), tonumber(ARGV[8])
local key = jk(id)
local f = redis.call('HMGET', key, 'owner', 'status', 'token', 'scope', 'seq', 'attempts',
  'enqueued_at', 'kind')
if f[1] ~= owner or f[2] ~= 'leased' then return 0 end
drop_token(f[3])
redis.call('HDEL', key, 'owner', 'token')
if retry_at == '' then
  log_outcome(id, f[4], 'dead', f[6], f[7], now, '', err, f[8] or '', kept, max_age)
  redis.call('HSET', key, 'status', 'dead', 'last_error', err, 'finished_at', now)
  redis.call('ZREM', LIVE, id)
  redis.call('LREM', sk(f[4]), 1, id)
  redis.call('ZADD', DEAD, f[5], id)
  if redis.call('LLEN', sk(f[4])) > 0 then add_token(f[4]) end
else
  redis.call('HSET', key, 'status', 'pending', 'last_error', err)
  redis.call('ZADD', DELAYED, retry_at, f[4])
end
return 1
"""

_RELEASE = """
local owner, undo = ARGV[2], ARGV[3] == '1'
local released = 0
for i = 4, #ARGV do
  local key = jk(ARGV[i])
  local f = redis.call('HMGET', key, 'owner', 'status', 'token', 'scope', 'attempts')
  if f[1] == owner and f[2] == 'leased' then
    drop_token(f[3])
    redis.call('HDEL', key, 'owner', 'token')
    redis.call('HSET', key, 'status', 'pending')
    if undo then
      redis.call('HSET', key, 'attempts', math.max(tonumber(f[5]) - 1, 0))
    end
    add_token(f[4])
    released = released + 1
  end
end
return released
"""

_RECOVER = """
local owner = ARGV[2]
local released = 0
for _, entry in ipairs(redis.call('XPENDING', READY, GROUP, '-', '+', 100000, owner)) do
  local token = entry[1]
  local scope = scope_of(token)
  drop_token(token)
  if scope then
    local head = redis.call('LINDEX', sk(scope), 0)
    if head then
      local key = jk(head)
      local f = redis.call('HMGET', key, 'owner', 'status')
      if f[1] == owner then
        redis.call('HDEL', key, 'owner', 'token')
        redis.call('HSET', key, 'status', 'pending')
        released = released + 1
      end
      if f[1] == owner or f[2] ~= 'leased' then add_token(scope) end
    end
  end
end
redis.call('XGROUP', 'DELCONSUMER', READY, GROUP, owner)
return released
"""

_RETRY_DEAD = """
local ids
if ARGV[2] == '' then
  ids = redis.call('ZRANGE', DEAD, 0, -1)
elseif redis.call('ZSCORE', DEAD, ARGV[2]) then
  ids = {ARGV[2]}
else
  ids = {}
end
for _, id in ipairs(ids) do
  local key = jk(id)
  redis.call('ZREM', DEAD, id)
  redis.call('HSET', key, 'status', 'pending', 'attempts', 0)
  local f = redis.call('HMGET', key, 'scope', 'seq', 'enqueued_at')
  redis.call('ZADD', LIVE, f[3], id)
  local list = sk(f[1])
  local placed = false
  for _, other in ipairs(redis.call('LRANGE', list, 0, -1)) do
    if tonumber(redis.call('HGET', jk(other), 'seq')) > tonumber(f[2]) then
      redis.call('LINSERT', list, 'BEFORE', other, id)
      placed = true
      break
    end
  end
  if not placed then redis.call('RPUSH', list, id) end
  if redis.call('LLEN', list) == 1 then add_token(f[1]) end
end
return #ids
"""

_PURGE_DEAD = """
local ids = redis.call('ZRANGE', DEAD, 0, -1)
for _, id in ipairs(ids) do redis.call('DEL', jk(id)) end
redis.call('DEL', DEAD)
return #ids
"""

# Each script runs with the helpers above prepended (``compiled``).
SCRIPTS = {
    "enqueue": _ENQUEUE,
    "claim": _CLAIM,
    "renew": _RENEW,
    "complete": _COMPLETE,
    "fail": _FAIL,
    "release": _RELEASE,
    "recover": _RECOVER,
    "retry_dead": _RETRY_DEAD,
    "purge_dead": _PURGE_DEAD,
}


def compiled() -> dict[str, str]:
    """Each script's source, the shared helpers first."""
    return {name: _HELPERS + body for name, body in SCRIPTS.items()}


__all__ = ["SCRIPTS", "compiled"]
