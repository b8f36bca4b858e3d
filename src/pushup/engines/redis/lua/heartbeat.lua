-- A node says it is alive. Standalone (no common head): it touches only the nodes'
-- sorted set, never channels, and always takes Redis's own clock, so every node
-- agrees on who is stale even where tests pass a fake clock to the other scripts.
--
-- KEYS[1] the nodes: a sorted set of node ids scored by their last heartbeat (epoch
-- seconds). ARGV[1] this node's id; ARGV[2] seconds after which a node is stale;
-- ARGV[3] '1' when the node leaves (a clean stop), else ''.
-- Stale entries are pruned. Returns the number of live nodes.

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.6f', now - tonumber(ARGV[2])))
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], string.format('%.6f', now), ARGV[1])
end
return redis.call('ZCARD', KEYS[1])
