--[[ tidegate: take or keep the lease on governing one queue's global rate limit, and write the
limit when given. The first governor of a queue records the limit it found (`found`: "max:duration",
"max:", or "none"), which stays until one hands the queue back, so a governor that dies and a
successor never take tidegate's own limit for the team's.
KEYS: 1 governor hash, 2 the queue's meta hash, 3 the queue's limiter counter
ARGV: 1 process id, 2 lease ttl (ms), 3 max ('' to write nothing), 4 duration (ms)
Returns {holds (1/0), holder, the previous holder's lease end (ms, 0 when none or this process),
the limit last written ("max:duration:at_ms", '' when none), limiter PTTL (ms), meta version
('' when none), now (ms), the queue's duration before this call wrote one ('' when none)}. ]]
local rcall = redis.call
local now = now_ms
local id, ttl = ARGV[1], tonumber(ARGV[2])
local g = rcall('HMGET', KEYS[1], 'holder', 'until', 'max', 'duration', 'at', 'found')
local holder, till = g[1], tonumber(g[2] or '0')
local meta = rcall('HMGET', KEYS[2], 'version', 'duration')
local version, duration = meta[1] or '', meta[2] or ''
local written = ''
if g[3] then written = g[3] .. ':' .. (g[4] or '') .. ':' .. (g[5] or '') end
if holder and holder ~= id and till >= now then
  return {0, holder, till, written, rcall('PTTL', KEYS[3]), version, now, duration}
end
if not g[6] then
  local m = rcall('HMGET', KEYS[2], 'max', 'duration')
  local found = 'none'
  if m[1] then found = m[1] .. ':' .. (m[2] or '') end
  rcall('HSET', KEYS[1], 'found', found)
end
local before = 0
if holder and holder ~= id then before = till end
rcall('HSET', KEYS[1], 'holder', id, 'until', now + ttl)
if ARGV[3] ~= '' then
  rcall('HSET', KEYS[2], 'max', ARGV[3], 'duration', ARGV[4])
  rcall('HSET', KEYS[1], 'max', ARGV[3], 'duration', ARGV[4], 'at', now)
end
return {1, id, before, written, rcall('PTTL', KEYS[3]), version, now, duration}
