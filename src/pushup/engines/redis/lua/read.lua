-- Cached messages of some channels, merged by id, each once, with the subscribed
-- channels holding it. ARGV[6] lowest id wanted, ARGV[7] highest ('+inf' for no
-- end), ARGV[8] '1' when dropped messages could have matched, ARGV[9..] channel ids.
local gone = {}
for i = 9, #ARGV do
  if redis.call('EXISTS', channel_key(ARGV[i])) == 0 then
    gone[#gone + 1] = ARGV[i]
  end
end
if #gone > 0 then
  return reply('missing', gone)
end
local low, high = ARGV[6], ARGV[7]
local holders, order = {}, {}
local gap = 0
for i = 9, #ARGV do
  local channel = ARGV[i]
  trim_aged(channel)
  if gap == 0 and ARGV[8] == '1' then
    local dropped = tonumber(redis.call('HGET', channel_key(channel), 'dropped') or '0')
    if dropped >= tonumber(low) then
      gap = 1
    end
  end
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', messages_key(channel), low, high)) do
    local held = holders[id]
    if held == nil then
      holders[id] = {tonumber(channel)}
      order[#order + 1] = tonumber(id)
    else
      held[#held + 1] = tonumber(channel)
    end
  end
end
table.sort(order)
local out = {gap, redis.call('GET', K_MESSAGE_SEQ) or '0'}
for _, number in ipairs(order) do
  local id = int(number)
  local held = holders[id]
  table.sort(held)
  for n, channel in ipairs(held) do
    held[n] = int(channel)
  end
  out[#out + 1] = id
  out[#out + 1] = table.concat(held, ',')
  out[#out + 1] = redis.call('HGET', K_TARGETS, id)
  out[#out + 1] = redis.call('HGET', K_DATA, id)
end
return reply('ok', out)
