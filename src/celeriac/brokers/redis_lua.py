"""The Lua scripts of the Redis broker (`celeriac.brokers.redis`): each runs atomically in Redis.

`RedisBroker` registers them once per client.  Their keys and arguments are described above
each one; the layout they work on is in the `celeriac.brokers.redis` docstring.
"""

__all__ = ["BIND_EXPIRING", "FETCH", "FORGET", "HEARTBEAT", "RESTORE", "TICK", "UNLOCK"]

# Records popped messages in unacked/unacked_index/held: `record` notes one, `flush` writes
# the notes with one HSET/ZADD/HSET (a redis.call per message each cost more than the pop).
# The envelope is stored as it came. Its tag, exchange and routing key are read from the text's
# tail where it ends as kombu (and celeriac) write it, without decoding the whole JSON (half of
# the script's time, bench/: drain); any other text is decoded with cjson.
_RECORD = """
local function jstr(s)
  if string.find(s, '[%c"\\\\/\\128-\\255]') then return cjson.encode(s) end
  return '"' .. s .. '"'
end
local KOMBU_TAIL = '"delivery_info": {"exchange": "([^"\\\\]*)", "routing_key": "([^"\\\\]*)"}, ' ..
  '"priority": %d+, "body_encoding": "base64", "delivery_tag": "([^"\\\\]+)"}}$'
local unacked, index, held = {}, {}, {}
local function flush()
  if #unacked > 0 then
    redis.call('HSET', KEYS[1], unpack(unacked))
    redis.call('ZADD', KEYS[2], unpack(index))
    redis.call('HSET', KEYS[3], unpack(held))
    unacked, index, held = {}, {}, {}
  end
end
local function record(raw, key, qname, now)
  local ex, rk, tag = string.match(string.sub(raw, -400), KOMBU_TAIL)
  if tag == nil then
    local ok, m = pcall(cjson.decode, raw)
    if ok and type(m) == 'table' and type(m['properties']) == 'table' then
      local p = m['properties']
      tag = p['delivery_tag']
      if type(p['delivery_info']) == 'table' then
        ex, rk = p['delivery_info']['exchange'], p['delivery_info']['routing_key']
      end
    end
    if type(tag) == 'number' then tag = tostring(tag) end
    if type(tag) ~= 'string' then tag = redis.sha1hex(raw) end
    if type(ex) ~= 'string' then ex = '' end
    if type(rk) ~= 'string' then ex, rk = '', '' end
  end
  if ex == '' and rk == '' then rk = qname end
  local n = #unacked
  unacked[n + 1] = tag
  unacked[n + 2] = '[' .. raw .. ', ' .. jstr(ex) .. ', ' .. jstr(rk) .. ']'
  index[n + 1] = now
  index[n + 2] = tag
  held[n + 1] = tag
  held[n + 2] = key
  if n >= 1998 then flush() end  -- unpack's stack has room for a few thousand values
  return tag
end
"""

# Acks, then pops: one round trip per turn of the worker loop.
# KEYS: unacked, unacked_index, held, list keys...; ARGV: limit, now, the message BRPOP took
# (or ''), its list index, one queue name per list key, then the tags to ack (as `ack_many`).
# Returns raw, list index, tag... (raw is '' for the message BRPOP took: the caller has it).
FETCH = _RECORD + """
local limit, now, out = tonumber(ARGV[1]), ARGV[2], {}
for i = 2 + #KEYS, #ARGV, 1000 do
  local j = math.min(i + 999, #ARGV)
  redis.call('ZREM', KEYS[2], unpack(ARGV, i, j))
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, j))
  redis.call('HDEL', KEYS[3], unpack(ARGV, i, j))
end
local function take(raw, i)
  local tag = record(raw, KEYS[3 + i], ARGV[4 + i], now)
  out[#out + 1] = raw; out[#out + 1] = i; out[#out + 1] = tag
end
if ARGV[3] ~= '' then
  take(ARGV[3], tonumber(ARGV[4])); out[1] = ''; limit = limit - 1
end
for i = 4, #KEYS do
  if limit <= 0 then break end
  local got = redis.call('RPOP', KEYS[i], limit)
  if got then
    for _, raw in ipairs(got) do take(raw, i - 3) end
    limit = limit - #got
  end
end
flush()
return out
"""

# Gives messages back. KEYS: unacked, unacked_index, held. ARGV: groups of five (tag, how, dest,
# payload, score); how is 'r' RPUSH (head), 'l' LPUSH (tail), 'z' ZADD (delayed), dest '' drops.
# Only the caller whose HDEL removed the tag moves the message: no restore runs twice.
RESTORE = """
local won, n = {}, 0
for i = 1, #ARGV, 5 do
  local tag, how, dest = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if won[tag] == nil then
    won[tag] = redis.call('HDEL', KEYS[1], tag) == 1
    if won[tag] then redis.call('ZREM', KEYS[2], tag); n = n + 1 end
    redis.call('HDEL', KEYS[3], tag)
  end
  if won[tag] and dest ~= '' then
    if how == 'r' then redis.call('RPUSH', dest, ARGV[i + 3])
    elseif how == 'l' then redis.call('LPUSH', dest, ARGV[i + 3])
    else redis.call('ZADD', dest, ARGV[i + 4], ARGV[i + 3]) end
  end
end
return n
"""

# Moves due delayed messages to the head of their priority list, reports the next due time and
# expired consumers. KEYS: consumers, delayed zsets...; ARGV: now, limit, queue list keys...
TICK = """
local now, limit, sep, promoted, nextdue = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], 0, ''
for i = 2, #KEYS do
  local due = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', now, 'LIMIT', 0, limit)
  for j = #due, 1, -1 do
    local ok, m = pcall(cjson.decode, due[j])
    local pri = 0
    if ok and type(m) == 'table' and type(m['properties']) == 'table' then
      pri = tonumber(m['properties']['priority']) or 0
    end
    local dest = ARGV[2 + i]
    if pri >= 9 then dest = dest .. sep .. '9' elseif pri >= 6 then dest = dest .. sep .. '6'
    elseif pri >= 3 then dest = dest .. sep .. '3' end
    redis.call('ZREM', KEYS[i], due[j])
    redis.call('RPUSH', dest, due[j])
  end
  promoted = promoted + #due
  local first = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if first[2] and (nextdue == '' or tonumber(first[2]) < tonumber(nextdue)) then nextdue = first[2] end
end
local t = redis.call('TIME')
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(t[1]) + tonumber(t[2]) / 1000000, 'LIMIT', 0, 10)
return {promoted, nextdue, dead}
"""

# KEYS: consumers, unacked_index; ARGV: consumer id, ttl, now, held tags...
HEARTBEAT = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(ARGV[2]), ARGV[1])
for i = 4, #ARGV do redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[i]) end
"""

# Forgets an expired consumer once its held hash is empty. KEYS: consumers, held; ARGV: id.
FORGET = """
local t = redis.call('TIME')
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(t[1]) + 1 and redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
end
"""

# kombu 5.7's binding for a queue with x-expires: the member plus a deadline (server clock).
BIND_EXPIRING = """
redis.call('SADD', KEYS[1], ARGV[1])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], 'GT', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3]), ARGV[2])
"""

# Releases the unacked_mutex if this caller still holds it. KEYS: mutex; ARGV: its token.
UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
