-- Ids of live channels, in the order given, each with its newest message id ('' for
-- none) and its expiry, after the number of the last event published: the node may
-- then answer re-polls on them itself (known.py). ARGV[6..] references.
local out, missing = {redis.call('GET', K_EVENT_SEQ) or '0'}, {}
for i = 6, #ARGV do
  local id = lookup(ARGV[i])
  if id then
    local f = redis.call('HMGET', channel_key(id), 'last', 'expires_at')
    out[#out + 1] = id
    out[#out + 1] = f[1] or ''
    out[#out + 1] = f[2]
  else
    missing[#missing + 1] = ARGV[i]
  end
end
if #missing > 0 then
  return reply('missing', missing)
end
return reply('ok', out)
