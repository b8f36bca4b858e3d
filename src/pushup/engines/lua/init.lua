-- A node starts: ids issued from now on are above now, as IdClock starts at now.
local function raise(key)
  local last = tonumber(redis.call('GET', key) or '0')
  if NOW_US > last then
    redis.call('SET', key, int(NOW_US))
  end
end
raise(K_MESSAGE_SEQ)
raise(K_CHANNEL_SEQ)
return reply('ok', {redis.call('GET', K_MESSAGE_SEQ), redis.call('GET', K_EVENT_SEQ) or '0'})
