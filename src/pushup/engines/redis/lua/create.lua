-- Create a channel. ARGV[6] ttl in seconds, ARGV[7] name ('' for none), ARGV[8] the
-- name of the publisher key that creates it ('' for none).
local ttl, name, owner = ARGV[6], ARGV[7], ARGV[8]
if name ~= '' and redis.call('HEXISTS', K_NAMES, name) == 1 then
  return reply('taken', {})
end
local id = int(next_id(K_CHANNEL_SEQ))
local expires_at = real(NOW + tonumber(ttl))
redis.call('HSET', channel_key(id), 'ttl', ttl, 'expires_at', expires_at)
if name ~= '' then
  redis.call('HSET', channel_key(id), 'name', name)
  redis.call('HSET', K_NAMES, name, id)
end
if owner ~= '' then
  redis.call('HSET', channel_key(id), 'owner', owner)
end
redis.call('ZADD', K_EXPIRY, expires_at, id)
return reply('ok', info(id))
