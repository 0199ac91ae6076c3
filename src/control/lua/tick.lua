-- One process's control tick: renew its membership, drop lapsed members, add its transient
-- write errors and the documents it took to the shared counts, take or keep the leader lease, and read the published rate.
-- KEYS[1] budget hash, KEYS[2] members zset
-- ARGV[1] process id, ARGV[2] lease/membership ttl (ms), ARGV[3] this process's new write errors,
-- ARGV[4] documents this process took since its last tick
-- Returns {is_leader, members, rate ('' when none is current), errors (total), used (total)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local id, ttl, errors, used = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

redis.call('ZADD', KEYS[2], now + ttl, id)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('PEXPIRE', KEYS[2], ttl)
local members = redis.call('ZCARD', KEYS[2])

local total = redis.call('HINCRBY', KEYS[1], 'errors', errors)
local used_total = redis.call('HINCRBY', KEYS[1], 'used', used)
local b = redis.call('HMGET', KEYS[1], 'leader', 'leader_until', 'rate', 'rate_until')
local leader = b[1]
if leader == id or not leader or tonumber(b[2] or '0') < now then
  redis.call('HSET', KEYS[1], 'leader', id, 'leader_until', now + ttl)
  leader = id
end
-- The hash outlives a short gap between processes, and no more.
redis.call('PEXPIRE', KEYS[1], ttl * 10)

local rate = ''
if b[3] and tonumber(b[4] or '0') >= now then
  rate = b[3]
end
return {leader == id and 1 or 0, members, rate, total, used_total}
