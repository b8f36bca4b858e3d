-- A page of live channels. ARGV[6] 'id' (by id) or 'name' (by name, of those with
-- a prefix), ARGV[7] and ARGV[8] the range (ZRANGEBYSCORE's or ZRANGEBYLEX's bounds),
-- ARGV[9] the page size. Answers the cursor of the next page ('' for none), then each
-- channel's info.
local by, low, high, limit = ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9])
local found
if by == 'id' then
  found = redis.call('ZRANGEBYSCORE', K_IDS, low, high, 'LIMIT', 0, limit + 1)
else
  found = redis.call('ZRANGEBYLEX', K_NAME_ORDER, low, high, 'LIMIT', 0, limit + 1)
end
local out = {''}
if #found > limit then
  out[1] = found[limit]
end
for n = 1, math.min(#found, limit) do
  local id = found[n]
  if by ~= 'id' then
    id = redis.call('HGET', K_NAMES, found[n])
  end
  for _, value in ipairs(info(id)) do
    out[#out + 1] = value
  end
end
return reply('ok', out)
