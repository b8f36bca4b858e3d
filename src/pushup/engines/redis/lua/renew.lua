-- Renew a channel. ARGV[6] reference, ARGV[7] new ttl ('' keeps the channel's).
local id = lookup(ARGV[6])
if not id then
  return reply('missing', {ARGV[6]})
end
local ttl = ARGV[7]
if ttl == '' then
  ttl = redis.call('HGET', channel_key(id), 'ttl')
else
  redis.call('HSET', channel_key(id), 'ttl', ttl)
end
local expires_at = real(NOW + tonumber(ttl))
redis.call('HSET', channel_key(id), 'expires_at', expires_at)
redis.call('ZADD', K_EXPIRY, expires_at, id)
return reply('ok', info(id))
