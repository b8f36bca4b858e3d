-- A node asks every node for its count of a channel's parked polls. Standalone, on
-- Redis's own clock, like heartbeat.lua.
--
-- KEYS[1] the nodes' sorted set (see heartbeat.lua). ARGV[1] the control channel every
-- node listens to; ARGV[2] seconds after which a node is stale; ARGV[3] the question.
-- Returns {nodes that heard the question, the live node ids...}: the asker waits for
-- the live nodes' answers, and for no more answers than there are listeners.

local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local live = redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%.6f', now - tonumber(ARGV[2])), '+inf')
local out = {redis.call('PUBLISH', ARGV[1], ARGV[3])}
for _, id in ipairs(live) do
  out[#out + 1] = id
end
return out
