-- The leader publishes the queue's total rate, if it is still the leader, with what it decided
-- from (for the back-office: limiting signal, CPU, latency and their targets).
-- KEYS[1] budget hash; ARGV[1] process id, ARGV[2] rate (documents/s), ARGV[3] ttl (ms),
-- ARGV[4..] field, value pairs of the decision ('' = not measured)
-- Returns 1 when published, 0 when the lease had passed to another process.
if redis.call('HGET', KEYS[1], 'leader') ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'rate', ARGV[2], 'rate_until', now + tonumber(ARGV[3]), 'decided_at', now,
  unpack(ARGV, 4))
return 1
