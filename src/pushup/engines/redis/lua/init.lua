-- A node starts: ids issued from now on are above now, as IdClock starts at now.
local function raise(key)
  local last = tonumber(redis.call('GET', key) or '0')
  if NOW_US > last then
    redis.call('SET', key, int(NOW_US))
  end
end
raise(K_MESSAGE_SEQ)
raise(K_CHANNEL_SEQ)
-- A cache stored before its bytes were counted: count them once.
if redis.call('EXISTS', K_BYTES) == 0 then
  local total = 0
  for _, id in ipairs(redis.call('HKEYS', K_DATA)) do
    total = total + redis.call('HSTRLEN', K_DATA, id)
  end
  if total > 0 then
    redis.call('SET', K_BYTES, int(total))
  end
end
-- Channels made before they were indexed for listings: index them once.
if redis.call('EXISTS', K_INDEXED) == 0 then
  for _, id in ipairs(redis.call('ZRANGE', K_EXPIRY, 0, -1)) do
    redis.call('ZADD', K_IDS, id, id)
    local name = redis.call('HGET', channel_key(id), 'name')
    if name then
      redis.call('ZADD', K_NAME_ORDER, 0, name)
    end
  end
  redis.call('SET', K_INDEXED, '1')
end
return reply('ok', {redis.call('GET', K_MESSAGE_SEQ), redis.call('GET', K_EVENT_SEQ) or '0'})
