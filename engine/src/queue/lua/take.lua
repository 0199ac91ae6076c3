--[[ tidegate: promote due delayed jobs, then move up to N jobs into active, each with a lock.
KEYS: 1 wait, 2 active, 3 prioritized, 4 delayed, 5 paused, 6 meta, 7 marker, 8 events, 9 pc
ARGV: 1 key base, 2 lock token, 3 lock ms, 4 max jobs, 5 now (ms), 6... the job names the
caller handles (none: every name); jobs of other names stay where they are, in order, for the
queue's other workers
Returns {jobs, next delayed due ms (0 = none), jobs left for other workers}; each job is
{id, name, data, opts, timestamp, attemptsMade, deferred failure} (missing fields are nil). ]]
local base, token, lockMs, max, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local target, paused = readyList(KEYS[6], KEYS[1], KEYS[5])
local handles = nil
if #ARGV > 5 then
  handles = {}
  for i = 6, #ARGV do handles[ARGV[i]] = true end
end
-- Ids looked at beyond a batch when some are left: bounds the work of one call.
local LOOK_AHEAD = 1000

-- Due delayed jobs become waiting (at most 1000 per call, as BullMQ does).
local due = rcall('ZRANGEBYSCORE', KEYS[4], 0, int((now + 1) * 4096 - 1), 'LIMIT', 0, 1000)
if #due > 0 then
  rcall('ZREM', KEYS[4], unpack(due))
  for _, id in ipairs(due) do
    requeue(target, KEYS[3], KEYS[9], id, tonumber(rcall('HGET', base .. id, 'priority')) or 0, false)
    rcall('XADD', KEYS[8], '*', 'event', 'waiting', 'jobId', id, 'prev', 'delayed')
    rcall('HSET', base .. id, 'delay', 0)
  end
end

local function nextDue()
  local first = rcall('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  if first[2] then return math.floor(tonumber(first[2]) / 4096) end
  return 0
end

if paused then return {{}, nextDue(), 0} end

-- Whether the caller handles this job (a job whose hash is gone is taken, to be dropped below).
local function handled(id)
  if handles == nil then return true end
  local name = rcall('HGET', base .. id, 'name')
  return not name or handles[name] == true
end

-- Take the oldest waiting ids in one go: LRANGE + LTRIM + LPUSH leave wait and active exactly
-- as one RPOPLPUSH per id would, in three calls instead of one per job.
local ids = {}
local left = 0
if handles == nil then
  local fromWait = rcall('LRANGE', KEYS[1], -max, -1)
  if #fromWait > 0 then
    rcall('LTRIM', KEYS[1], 0, -(#fromWait + 1))
    for i = #fromWait, 1, -1 do ids[#ids + 1] = fromWait[i] end
  end
else
  -- Oldest first, take what the caller handles; the rest goes back to the oldest end in the
  -- order it had, so other workers still meet it first. A batch's worth is looked at first;
  -- only when some of it is left does the look reach further.
  local function pick(window)
    local looked = rcall('LRANGE', KEYS[1], -window, -1)
    local picked, taken, others = {}, {}, 0
    for i = #looked, 1, -1 do
      if #picked == max then break end
      local id = looked[i]
      if handled(id) then
        picked[#picked + 1] = id
        taken[id] = true
      else
        others = others + 1
      end
    end
    return looked, picked, taken, others
  end
  local looked, picked, taken, others = pick(max)
  if #picked < max and #looked == max and others > 0 then
    looked, picked, taken, others = pick(max + LOOK_AHEAD)
  end
  ids = picked
  if #ids == #looked then
    rcall('LTRIM', KEYS[1], 0, -(#looked + 1))
  elseif #ids > 0 then
    local stay = {}
    for i = 1, #looked do
      if not taken[looked[i]] then stay[#stay + 1] = looked[i] end
    end
    rcall('LTRIM', KEYS[1], 0, -(#looked + 1))
    inChunks('RPUSH', KEYS[1], stay)
  end
  left = others
end
-- Prioritized jobs run only when wait is empty, lowest score first.
if #ids < max then
  if handles == nil then
    local popped = rcall('ZPOPMIN', KEYS[3], max - #ids)
    for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
  else
    local want = max - #ids
    local function pick(window)
      local looked = rcall('ZRANGE', KEYS[3], 0, window - 1)
      local chosen, others = {}, 0
      for _, id in ipairs(looked) do
        if #chosen == want then break end
        if handled(id) then chosen[#chosen + 1] = id else others = others + 1 end
      end
      return looked, chosen, others
    end
    local looked, chosen, others = pick(want)
    if #chosen < want and #looked == want and others > 0 then
      looked, chosen, others = pick(want + LOOK_AHEAD)
    end
    for _, id in ipairs(chosen) do ids[#ids + 1] = id end
    if #chosen > 0 then inChunks('ZREM', KEYS[3], chosen) end
    left = left + others
  end
end
inChunks('LPUSH', KEYS[2], ids)

local jobs = {}
for _, id in ipairs(ids) do
  local jobKey = base .. id
  local f = rcall('HMGET', jobKey, 'name', 'data', 'opts', 'timestamp', 'atm', 'defa', 'attemptsMade', 'ats')
  -- Skip legacy BullMQ markers ('0:...') and ids whose hash was removed while waiting.
  if string.sub(id, 1, 2) == '0:' or (not f[1] and not f[2] and not f[4]) then
    rcall('LREM', KEYS[2], -1, id)
  else
    rcall('SET', jobKey .. ':lock', token, 'PX', lockMs)
    rcall('XADD', KEYS[8], '*', 'event', 'active', 'jobId', id, 'prev', 'waiting')
    rcall('HSET', jobKey, 'processedOn', ARGV[5], 'ats', (tonumber(f[8]) or 0) + 1)
    jobs[#jobs + 1] = {id, f[1], f[2], f[3], f[4], f[5] or f[7], f[6]}
  end
end

-- Wake other idle workers while work remains (also the other workers of jobs left alone).
if (#jobs > 0 or left > 0) and (rcall('LLEN', KEYS[1]) > 0 or rcall('ZCARD', KEYS[3]) > 0) then
  rcall('ZADD', KEYS[7], 0, '0')
end
return {jobs, nextDue(), left}
