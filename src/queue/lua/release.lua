--[[ tidegate: give unfinished jobs back on shutdown: out of active, to the front of wait, lock
released, so another worker takes them next without waiting for the stalled check.
KEYS: 1 active, 2 wait, 3 paused, 4 meta, 5 marker, 6 events
ARGV: 1 key base, 2 lock token, 3.. job ids
Returns the number released. ]]
local base, token = ARGV[1], ARGV[2]
local target, paused = readyList(KEYS[4], KEYS[2], KEYS[3])
local released = 0
for i = 3, #ARGV do
  local id = ARGV[i]
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
