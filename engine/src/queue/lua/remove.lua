--[[ tidegate: remove a job and its data from whatever state holds it, as BullMQ's Job.remove
does; a job a worker holds (its lock is live) is refused, as in BullMQ.
KEYS: 1 wait, 2 paused, 3 active, 4 prioritized, 5 delayed, 6 completed, 7 failed, 8 events,
      9 stalled
ARGV: 1 key base, 2 id
Returns {state it was in ('' if none), data, failed reason}, {'locked'}, or {} when there is
no such job. ]]
local id = ARGV[2]
local key = ARGV[1] .. id
if rcall('EXISTS', key) == 0 then return {} end
if rcall('EXISTS', key .. ':lock') == 1 then return {'locked'} end
local state = ''
local lists = {{1, 'waiting'}, {2, 'paused'}, {3, 'active'}}
for _, l in ipairs(lists) do
  if rcall('LREM', KEYS[l[1]], 0, id) > 0 then state = l[2] end
end
local sets = {{4, 'prioritized'}, {5, 'delayed'}, {6, 'completed'}, {7, 'failed'}}
for _, s in ipairs(sets) do
  if rcall('ZREM', KEYS[s[1]], id) > 0 then state = s[2] end
end
rcall('SREM', KEYS[9], id)
local f = rcall('HMGET', key, 'data', 'failedReason')
rcall('DEL', key, key .. ':logs')
rcall('XADD', KEYS[8], '*', 'event', 'removed', 'jobId', id, 'prev', state)
return {state, f[1] or '', f[2] or ''}
