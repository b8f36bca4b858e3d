-- Shared head of every PushUp script: key layout, the clock, ids, expiry, events.
-- The engine prepends it to each operation's script, so each operation is one
-- script and runs atomically: no node ever sees half of it.
--
-- ARGV[1] key prefix; ARGV[2] the pub/sub channel of events (pub/sub spans every
-- database, so its name carries the database's number); ARGV[3] now in epoch seconds
-- and ARGV[4] the same in µs, both '' to use Redis TIME (tests pass a fake clock
-- here); ARGV[5] message TTL in seconds. The operation's own arguments start at ARGV[6].
--
-- Numbers: Lua's are doubles, exact for ids (< 2^53); they are formatted with
-- int()/real() since tostring() keeps only 14 digits.

local P = ARGV[1]
local K_MESSAGE_SEQ = P .. 'seq:message'  -- last message id issued
local K_CHANNEL_SEQ = P .. 'seq:channel'  -- last channel id issued
local K_EVENT_SEQ = P .. 'seq:event'      -- last event published
local K_NAMES = P .. 'names'              -- hash: name -> channel id
local K_EXPIRY = P .. 'expiry'            -- zset: channel id by expires_at
local K_MESSAGES = P .. 'messages'        -- zset: every cached message id, by id
local K_DATA = P .. 'message:data'        -- hash: message id -> JSON payload
local K_TARGETS = P .. 'message:channels' -- hash: message id -> 'id,id,...'
local K_BYTES = P .. 'cache:bytes'        -- total length of the payloads in K_DATA (absent: 0)
local K_IDS = P .. 'channels'             -- zset: every live channel id, by id (listings)
local K_NAME_ORDER = P .. 'names:sorted'  -- zset: every live name, score 0 (listings by name)
local K_INDEXED = P .. 'channels:indexed' -- set once the two above hold every live channel
local K_EVENTS = ARGV[2]                   -- pub/sub channel every node listens to

local NOW, NOW_US
if ARGV[3] == '' then
  local t = redis.call('TIME')
  NOW_US = tonumber(t[1]) * 1000000 + tonumber(t[2])
  NOW = NOW_US / 1000000
else
  NOW = tonumber(ARGV[3])
  NOW_US = tonumber(ARGV[4])
end
local MESSAGE_TTL = tonumber(ARGV[5])
-- Sequence number of the last event this script published (0: none); the caller
-- waits until its node has heard it, so local listeners know before it returns.
local EVENT = 0
-- The channels this script closed or expired, four values each (id, name or '',
-- 'closed' or 'expired', when): its node speaks for them to the application, since
-- the script that removes a channel runs once, whichever node sent it.
local DROPPED = {}

local function int(n)
  return string.format('%.0f', n)
end

local function real(x)
  return string.format('%.17g', x)
end

-- A channel: hash with ttl, expires_at, name, owner (the publisher key that created
-- it), last (message id), dropped (the newest message id it dropped from its cache),
-- its own retention if it asked for one (mttl: message TTL in seconds, mmax: messages
-- kept; never above the server's),
-- and a zset of its message ids.
local function channel_key(id)
  return P .. 'channel:' .. id
end

local function messages_key(id)
  return P .. 'channel:' .. id .. ':messages'
end

-- Ids as core/ids.py IdClock makes them: max(last + 1, now in µs).
local function next_id(key)
  local last = tonumber(redis.call('GET', key) or '0')
  local id = last + 1
  if NOW_US > last then
    id = NOW_US
  end
  redis.call('SET', key, int(id))
  return id
end

local function emit(kind, rest)
  EVENT = redis.call('INCR', K_EVENT_SEQ)
  redis.call('PUBLISH', K_EVENTS, kind .. ' ' .. int(EVENT) .. rest)
end

-- A reference as the engine encodes it: 'i:<id>' or 'n:<name>'. The id, or nil.
local function lookup(ref)
  local kind, value = string.sub(ref, 1, 2), string.sub(ref, 3)
  if kind == 'i:' then
    if redis.call('EXISTS', channel_key(value)) == 1 then
      return value
    end
    return nil
  end
  local id = redis.call('HGET', K_NAMES, value)
  if id then
    return id
  end
  return nil
end

local function mark_dropped(channel, id)
  local key = channel_key(channel)
  local dropped = tonumber(redis.call('HGET', key, 'dropped') or '0')
  if tonumber(id) > dropped then
    redis.call('HSET', key, 'dropped', id)
  end
end

-- A payload of `size` bytes left the cache.
local function uncount(size)
  if size > 0 and redis.call('DECRBY', K_BYTES, size) <= 0 then
    redis.call('DEL', K_BYTES)
  end
end

-- Delete a message's payload and records (its channels no longer hold it).
local function delete_message(id)
  uncount(redis.call('HSTRLEN', K_DATA, id))
  redis.call('HDEL', K_DATA, id)
  redis.call('HDEL', K_TARGETS, id)
  redis.call('ZREM', K_MESSAGES, id)
end

-- A channel let go of message `id`: delete it once no channel holds it, so its
-- bytes no longer count against the byte limit.
local function release(id)
  local targets = redis.call('HGET', K_TARGETS, id)
  if targets then
    for channel in string.gmatch(targets, '[^,]+') do
      if redis.call('ZSCORE', messages_key(channel), id) then
        return
      end
    end
  end
  delete_message(id)
end

-- Forget channels (closed or expired: `reason`) and tell every node, in one event.
local function drop(ids, reason)
  for _, id in ipairs(ids) do
    local name = redis.call('HGET', channel_key(id), 'name')
    if name then
      redis.call('HDEL', K_NAMES, name)
      redis.call('ZREM', K_NAME_ORDER, name)
    end
    redis.call('ZREM', K_IDS, id)
    local n = #DROPPED
    DROPPED[n + 1], DROPPED[n + 2], DROPPED[n + 3], DROPPED[n + 4] =
      id, name or '', reason, real(NOW)
    local held = redis.call('ZRANGE', messages_key(id), 0, -1)
    redis.call('DEL', channel_key(id), messages_key(id))
    for _, message in ipairs(held) do
      release(message)
    end
    redis.call('ZREM', K_EXPIRY, id)
  end
  emit('C', ' ' .. table.concat(ids, ','))
end

-- Forget one cached message: out of its channels (raising their gap marks), its
-- payload and its bytes. Returns the channels that still held it.
local function forget_message(id)
  local held = {}
  local targets = redis.call('HGET', K_TARGETS, id)
  if targets then
    for channel in string.gmatch(targets, '[^,]+') do
      if redis.call('ZREM', messages_key(channel), id) == 1 then
        mark_dropped(channel, id)
        held[#held + 1] = channel
      end
    end
  end
  delete_message(id)
  return held
end

-- Drop messages older than the message TTL (message age is global: oldest ids
-- first, never a scan) and channels past their expiry. Every script starts here.
local function expire()
  local horizon = NOW - MESSAGE_TTL
  -- Only ids that may have expired (an id above this is newer than the horizon
  -- whatever the rounding): most calls find none, and fetch none.
  local bound = int(math.floor(horizon * 1000000) + 1)
  local more = true
  while more do
    local oldest = redis.call('ZRANGEBYSCORE', K_MESSAGES, '-inf', bound, 'LIMIT', 0, 100)
    more = #oldest == 100
    for _, id in ipairs(oldest) do
      -- The same float comparison as the memory engine: time = id / 1e6.
      if tonumber(id) / 1000000 >= horizon then
        more = false
        break
      end
      forget_message(id)
    end
  end
  local due = redis.call('ZRANGEBYSCORE', K_EXPIRY, '-inf', real(NOW))
  if #due > 0 then
    drop(due, 'expired')
  end
end

-- A channel with a message TTL of its own drops what is past it. Message age is
-- otherwise global (expire() above); a shorter one is applied when the channel is
-- published to, read or shown, so a reader never sees what it should have dropped.
local function trim_aged(channel)
  local own = redis.call('HGET', channel_key(channel), 'mttl')
  if not own then
    return
  end
  local horizon = NOW - math.min(tonumber(own), MESSAGE_TTL)
  local key = messages_key(channel)
  local bound = int(math.floor(horizon * 1000000) + 1)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', bound)) do
    if tonumber(id) / 1000000 >= horizon then
      break
    end
    redis.call('ZREM', key, id)
    mark_dropped(channel, id)
    release(id)
  end
end

local function info(id)
  trim_aged(id)
  local f = redis.call(
    'HMGET', channel_key(id), 'name', 'ttl', 'expires_at', 'last', 'mttl', 'mmax', 'owner')
  return {
    id, f[1] or '', f[2], f[3], redis.call('ZCARD', messages_key(id)), f[4] or '',
    f[5] or '', f[6] or '', f[7] or ''}
end

local function reply(status, values)
  local out = {status, EVENT, DROPPED}
  for _, value in ipairs(values) do
    out[#out + 1] = value
  end
  return out
end

expire()
