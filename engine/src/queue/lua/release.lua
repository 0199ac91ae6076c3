--[[ tidegate: give unfinished jobs back (on shutdown, in an outage): out of active, to the
front of wait, lock released, their attempt not counted, so another worker takes them next
without waiting for the stalled check.
KEYS: 1 active, 2 wait, 3 paused, 4 meta, 5 marker, 6 events
ARGV: 1 key base, 2 lock token, 3.. job ids; none: every active job the token holds (after a
take whose answer was lost, so the caller never learnt which)
Returns the number released. ]]
local base, token = ARGV[1], ARGV[2]
local target, paused = readyList(KEYS[4], KEYS[2], KEYS[3])
local ids = {}
if #ARGV > 2 then
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = rcall('LRANGE', KEYS[1], 0, -1)
end
local released = 0
for _, id in ipairs(ids) do
  local key = base .. id
  if rcall('GET', key .. ':lock') == token then
    rcall('DEL', key .. ':lock')
    rcall('LREM', KEYS[1], -1, id)
    rcall('HINCRBY', key, 'ats', -1)
    rcall('RPUSH', target, id)
    rcall('XADD', KEYS[6], '*', 'event', 'waiting', 'jobId', id, 'prev', 'active')
    released = released + 1
  end
end
if released > 0 and not paused then rcall('ZADD', KEYS[5], 0, '0') end
return released
