--[[ tidegate: run a delayed job now, as BullMQ's Job.promote does: out of delayed, delay set to
0, into wait (paused while the queue is; prioritized when the job has a priority).
KEYS: 1 delayed, 2 wait, 3 paused, 4 meta, 5 marker, 6 events, 7 prioritized, 8 pc
ARGV: 1 key base, 2 id
Returns 1, or 0 when the job is not delayed. ]]
local id = ARGV[2]
if rcall('ZREM', KEYS[1], id) == 0 then return 0 end
local key = ARGV[1] .. id
local target, paused = readyList(KEYS[4], KEYS[2], KEYS[3])
local priority = tonumber(rcall('HGET', key, 'priority')) or 0
requeue(target, KEYS[7], KEYS[8], id, priority, false)
rcall('HSET', key, 'delay', 0)
rcall('XADD', KEYS[6], '*', 'event', 'waiting', 'jobId', id, 'prev', 'delayed')
if not paused then rcall('ZADD', KEYS[5], 0, '0') end
return 1
