-- Ids of live channels, in the order given. ARGV[6..] references.
local ids, missing = {}, {}
for i = 6, #ARGV do
  local id = lookup(ARGV[i])
  if id then
    ids[#ids + 1] = id
  else
    missing[#missing + 1] = ARGV[i]
  end
end
if #missing > 0 then
  return reply('missing', missing)
end
return reply('ok', ids)
