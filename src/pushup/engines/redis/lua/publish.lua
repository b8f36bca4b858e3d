-- Publish a batch, all or nothing: ids and times, storage in every channel, the
-- count and byte limits (a channel's own count and message TTL, if it has them),
-- channel activity, and one event telling every node.
-- ARGV[6] max messages per channel, ARGV[7] max bytes of payload cached over all
-- channels, ARGV[8] number of publications, then for each: the number of
-- references, the references, the JSON payload. Then the idempotency key's digest
-- ('' for none), the request's fingerprint, and the window in ms: the first answer
-- to a key is kept with the publication, in this same script, so no node can find
-- the key free once the publication is stored, nor store it twice.
local max_messages = tonumber(ARGV[6])
local max_bytes = tonumber(ARGV[7])
local publications, missing, seen_missing = {}, {}, {}
local i = 9
for p = 1, tonumber(ARGV[8]) do
  local count = tonumber(ARGV[i])
  i = i + 1
  local ids, seen = {}, {}
  for _ = 1, count do
    local ref = ARGV[i]
    i = i + 1
    local id = lookup(ref)
    if not id then
      if not seen_missing[ref] then
        seen_missing[ref] = true
        missing[#missing + 1] = ref
      end
    elseif not seen[id] then
      seen[id] = true
      ids[#ids + 1] = tonumber(id)
    end
  end
  table.sort(ids)
  publications[p] = {ids, ARGV[i]}
  i = i + 1
end
local answer_key, fingerprint, window_ms = nil, ARGV[i + 1], tonumber(ARGV[i + 2])
if ARGV[i] ~= '' then
  answer_key = P .. 'answer:' .. ARGV[i]
  -- 'fingerprint expires_at\nid channels id channels ...': the first answer. Its key
  -- expires by Redis's clock; `expires_at` holds it to the scripts' own (a test's).
  local kept = redis.call('GET', answer_key)
  if kept then
    local newline = string.find(kept, '\n', 1, true)
    local space = string.find(kept, ' ', 1, true)
    if tonumber(string.sub(kept, space + 1, newline - 1)) <= NOW then
      redis.call('DEL', answer_key)
    elseif string.sub(kept, 1, space - 1) ~= fingerprint then
      return reply('reused', {})
    else
      local values = {}
      for value in string.gmatch(string.sub(kept, newline + 1), '[^ ]+') do
        values[#values + 1] = value
      end
      return reply('replayed', values)
    end
  end
end
if #missing > 0 then
  return reply('missing', missing)
end

local first = nil
local results, records = {}, {}
local last_of, touched = {}, {}  -- per channel its newest id; channels in order
local caps = {}  -- per channel the messages it keeps
local evicted, evicted_list = {}, {}
for _, publication in ipairs(publications) do
  local id = int(next_id(K_MESSAGE_SEQ))
  first = first or tonumber(id)
  local targets = {}
  for n, channel in ipairs(publication[1]) do
    targets[n] = int(channel)
  end
  local targets_csv = table.concat(targets, ',')
  local data = publication[2]
  -- The payload is stored once; each channel's zset holds only the id.
  redis.call('HSET', K_DATA, id, data)
  redis.call('INCRBY', K_BYTES, #data)
  redis.call('HSET', K_TARGETS, id, targets_csv)
  redis.call('ZADD', K_MESSAGES, id, id)
  for _, channel in ipairs(targets) do
    local key = messages_key(channel)
    redis.call('ZADD', key, id, id)
    if not last_of[channel] then
      touched[#touched + 1] = channel
      local own = tonumber(redis.call('HGET', channel_key(channel), 'mmax') or max_messages)
      caps[channel] = math.min(own, max_messages)
    end
    last_of[channel] = id
    if redis.call('ZCARD', key) > caps[channel] then
      local dropped = redis.call('ZPOPMIN', key)[1]
      mark_dropped(channel, dropped)
      release(dropped)
      -- The batch itself lost a message here: subscribers learn of a gap.
      if tonumber(dropped) >= first and not evicted[channel] then
        evicted[channel] = true
        evicted_list[#evicted_list + 1] = channel
      end
    end
  end
  results[#results + 1] = id
  results[#results + 1] = targets_csv
  records[#records + 1] = id .. ' ' .. targets_csv .. ' ' .. #data .. '\n' .. data
end
-- The byte limit: the oldest messages go first, over all channels, as by age.
while tonumber(redis.call('GET', K_BYTES) or '0') > max_bytes do
  local oldest = redis.call('ZRANGE', K_MESSAGES, 0, 0)
  if #oldest == 0 then
    break
  end
  for _, channel in ipairs(forget_message(oldest[1])) do
    if tonumber(oldest[1]) >= first and not evicted[channel] then
      evicted[channel] = true
      evicted_list[#evicted_list + 1] = channel
    end
  end
end
-- Activity: each channel published to lives another TTL from now.
for _, channel in ipairs(touched) do
  trim_aged(channel)
  local key = channel_key(channel)
  local expires_at = real(NOW + tonumber(redis.call('HGET', key, 'ttl')))
  redis.call('HSET', key, 'last', last_of[channel], 'expires_at', expires_at)
  redis.call('ZADD', K_EXPIRY, expires_at, channel)
end
if answer_key then
  local expires_at = real(NOW + window_ms / 1000)
  redis.call('SET', answer_key, fingerprint .. ' ' .. expires_at .. '\n' ..
    table.concat(results, ' '), 'PX', int(window_ms), 'NX')
end
emit('P', ' ' .. table.concat(evicted_list, ',') .. '\n' .. table.concat(records))
return reply('ok', results)
