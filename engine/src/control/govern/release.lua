--[[ tidegate: hand a governed queue back: if this process holds the lease, set the queue's global
rate limit to the fallback and forget the governor (the limit found with it).
KEYS: 1 governor hash, 2 the queue's meta hash
ARGV: 1 process id, 2 fallback: 'found' (the limit the first governor found), 'none', or
      "max:duration"
Returns the limit left ("max:duration", "max:" or "none"), or false if another process holds the
lease. ]]
local rcall = redis.call
if rcall('HGET', KEYS[1], 'holder') ~= ARGV[1] then return false end
local limit = ARGV[2]
if limit == 'found' then limit = rcall('HGET', KEYS[1], 'found') or 'none' end
if limit == 'none' then
  rcall('HDEL', KEYS[2], 'max', 'duration')
else
  local max, duration = string.match(limit, '^([^:]*):(.*)$')
  rcall('HSET', KEYS[2], 'max', max)
  if duration == '' then
    rcall('HDEL', KEYS[2], 'duration')
  else
    rcall('HSET', KEYS[2], 'duration', duration)
  end
end
rcall('DEL', KEYS[1])
return limit
