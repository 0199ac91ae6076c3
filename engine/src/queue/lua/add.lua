--[[ tidegate: add many jobs in one call, in BullMQ v5's layout.
KEYS: 1 wait, 2 paused, 3 meta, 4 id, 5 delayed, 6 prioritized, 7 pc, 8 events, 9 marker
ARGV: 1 key base, 2 now (ms), 3 job count, then per job 7 values:
      custom id ('' = generate), name, data (JSON), opts (JSON), delay ms, priority, lifo ('1'/'0')
Returns {ids, duplicated flags (1 = a job with that custom id already existed; nothing written)} ]]
local base, now, n = ARGV[1], ARGV[2], tonumber(ARGV[3])

local maxEvents = rcall('HGET', KEYS[3], 'opts.maxLenEvents')
if not maxEvents then
  maxEvents = 10000
  rcall('HSET', KEYS[3], 'opts.maxLenEvents', maxEvents)
end
local target, paused = readyList(KEYS[3], KEYS[1], KEYS[2])


local ids, duplicated = {}, {}
local ready = false
local anyDelayed = false
-- BullMQ advances the counter once per add, custom id or not: one INCRBY does it for the chunk.
local first = rcall('INCRBY', KEYS[4], n) - n
-- Plain FIFO jobs are pushed together: LPUSH of many ids equals one LPUSH per id, in order.
local fifo = {}
local function flushFifo()
  inChunks('LPUSH', target, fifo)
  fifo = {}
end
for i = 0, n - 1 do
  local a = 4 + i * 7
  local custom, name, data, opts = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local delay, priority = tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local id = custom ~= '' and custom or tostring(first + i + 1)
  local jobKey = base .. id
  if custom ~= '' and rcall('EXISTS', jobKey) == 1 then
    rcall('XADD', KEYS[8], 'MAXLEN', '~', maxEvents, '*', 'event', 'duplicated', 'jobId', id)
    duplicated[#duplicated + 1] = 1
  else
    rcall('HSET', jobKey, 'name', name, 'data', data, 'opts', opts, 'timestamp', now,
      'delay', delay, 'priority', priority)
    rcall('XADD', KEYS[8], '*', 'event', 'added', 'jobId', id, 'name', name)
    if delay > 0 then
      local due = tonumber(now) + delay
      rcall('ZADD', KEYS[5], delayedScore(KEYS[5], due), id)
      rcall('XADD', KEYS[8], 'MAXLEN', '~', maxEvents, '*', 'event', 'delayed', 'jobId', id, 'delay', int(due))
      anyDelayed = true
    else
      if priority > 0 then
        addPrioritized(KEYS[6], KEYS[7], priority, id)
      elseif ARGV[a + 6] == '1' then
        flushFifo()
        rcall('RPUSH', target, id)
      else
        fifo[#fifo + 1] = id
      end
      rcall('XADD', KEYS[8], 'MAXLEN', '~', maxEvents, '*', 'event', 'waiting', 'jobId', id)
      ready = true
    end
    duplicated[#duplicated + 1] = 0
  end
  ids[#ids + 1] = id
end
flushFifo()

if ready and not paused then rcall('ZADD', KEYS[9], 0, '0') end
if anyDelayed then markNextDelayed(KEYS[5], KEYS[9]) end
return {ids, duplicated}
