-- The periodic sweep (expire() above did the work): when is the next expiry due?
local due = nil
local oldest = redis.call('ZRANGE', K_MESSAGES, 0, 0)
if #oldest > 0 then
  due = tonumber(oldest[1]) / 1000000 + MESSAGE_TTL
end
local first = redis.call('ZRANGE', K_EXPIRY, 0, 0, 'WITHSCORES')
if #first > 0 and (due == nil or tonumber(first[2]) < due) then
  due = tonumber(first[2])
end
if due == nil then
  return reply('ok', {'', real(NOW)})
end
return reply('ok', {real(due), real(NOW)})
