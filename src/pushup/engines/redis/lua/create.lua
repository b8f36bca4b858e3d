-- Create a channel. ARGV[6] ttl in seconds, ARGV[7] name ('' for none), ARGV[8] its
-- own message TTL and ARGV[9] its own message count ('' for the server's), ARGV[10]
-- the name of the publisher key that creates it ('' for none).
local ttl, name, mttl, mmax, owner = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
if name ~= '' and redis.call('HEXISTS', K_NAMES, name) == 1 then
  return reply('taken', {})
end
local id = int(next_id(K_CHANNEL_SEQ))
local expires_at = real(NOW + tonumber(ttl))
redis.call('HSET', channel_key(id), 'ttl', ttl, 'expires_at', expires_at)
if name ~= '' then
  redis.call('HSET', channel_key(id), 'name', name)
  redis.call('HSET', K_NAMES, name, id)
  redis.call('ZADD', K_NAME_ORDER, 0, name)
end
if mttl ~= '' then
  redis.call('HSET', channel_key(id), 'mttl', mttl)
end
if mmax ~= '' then
  redis.call('HSET', channel_key(id), 'mmax', mmax)
end
if owner ~= '' then
  redis.call('HSET', channel_key(id), 'owner', owner)
end
redis.call('ZADD', K_IDS, id, id)
redis.call('ZADD', K_EXPIRY, expires_at, id)
return reply('ok', info(id))
