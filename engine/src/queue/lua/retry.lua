--[[ tidegate: retry failed jobs as BullMQ's Job.retry and Queue.retryJobs do: out of failed,
the finish fields cleared, into wait (paused while the queue is; prioritized when the job has a
priority; at the front when it is LIFO). Attempts made are kept, as in BullMQ: a job that used
them all gets one more.
KEYS: 1 failed, 2 wait, 3 paused, 4 meta, 5 marker, 6 events, 7 prioritized, 8 pc
ARGV: 1 key base, 2 most jobs to take from failed, oldest first, when no ids follow; 3.. ids
Returns {id, data, failed reason} per job retried; an id that is not in failed is skipped. ]]
local base = ARGV[1]
local ids = {}
if #ARGV > 2 then
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = rcall('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
end
local maxEvents = rcall('HGET', KEYS[4], 'opts.maxLenEvents') or 10000
local target, paused = readyList(KEYS[4], KEYS[2], KEYS[3])
local retried = {}
for _, id in ipairs(ids) do
  if rcall('ZREM', KEYS[1], id) == 1 then
    local key = base .. id
    local f = rcall('HMGET', key, 'priority', 'opts', 'data', 'failedReason')
    rcall('HDEL', key, 'finishedOn', 'processedOn', 'failedReason')
    local ok, opts = pcall(cjson.decode, f[2] or '{}')
    local lifo = ok and type(opts) == 'table' and opts.lifo == true
    requeue(target, KEYS[7], KEYS[8], id, tonumber(f[1]) or 0, lifo)
    rcall('XADD', KEYS[6], 'MAXLEN', '~', maxEvents, '*', 'event', 'waiting', 'jobId', id, 'prev', 'failed')
    retried[#retried + 1] = id
    retried[#retried + 1] = f[3] or ''
    retried[#retried + 1] = f[4] or ''
  end
end
if #retried > 0 and not paused then rcall('ZADD', KEYS[5], 0, '0') end
return retried
