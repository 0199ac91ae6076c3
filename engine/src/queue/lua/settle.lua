--[[ tidegate: settle many active jobs in one call, each by its own outcome.
KEYS: 1 active, 2 completed, 3 failed, 4 delayed, 5 wait, 6 paused, 7 meta, 8 events, 9 marker,
      10 stalled, 11 prioritized, 12 pc, then per finish counter i (1..m) two keys:
      12 + 2i - 1 its counts HASH, 12 + 2i its reasons HASH
ARGV: 1 key base, 2 lock token, 3 now (ms), 4 job count, 5 reason bytes counted,
      5 + i counter i's ttl (s), then per job 7 values:
      id, kind, value, stacktrace (JSON), a, b, counter (0 = none)
  kind 'completed': value = returnvalue (JSON); a, b = keep count, keep age s (-1 = no limit)
  kind 'failed' (for good) or 'exhausted' (failed, attempts used up): value = reason; a, b as
    for 'completed'
  kind 'retry': value = reason; a = delay ms; b = '1' when lifo
A settled finish ('completed', 'failed', 'exhausted') adds one to its counter's `completed` or `failed` field and,
failed, one to its reason (cut at a character boundary) in the reasons HASH: counted in the
same call, a finish is counted once whatever happens to the reply.
A job whose lock lapsed (Redis was out of reach past it) but that is still active is settled
all the same: nobody took it since, as a job leaves active only through a worker or the
stalled check. BullMQ refuses it; settling it spares running it again.
Returns one code per job: 1 settled, -2 lock missing and the job no longer active (the stalled
check handed it out again), -6 lock held by another token (the job was recovered as stalled and
may be running elsewhere: it is left alone). ]]
local base, token, now, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local reasonBytes = tonumber(ARGV[5])
local counters = (#KEYS - 12) / 2
local first = 6 + counters
local target, paused = readyList(KEYS[7], KEYS[5], KEYS[6])
local maxEvents = rcall('HGET', KEYS[7], 'opts.maxLenEvents') or 10000

-- A finished job holds no lock, so deleting ':lock' too is harmless and saves the settling job
-- a call of its own.
-- tidegate runs no flows, so a job has no flow keys (':dependencies', ...) to delete.
local function removeJobKeys(id)
  local key = base .. id
  rcall('DEL', key, key .. ':lock', key .. ':logs')
end

-- Retention is applied once per distinct policy after all moves: the same result as after each
-- job, since this call's jobs are the newest in the set.
local trims, trimOrder = {}, {}
-- Returns attemptsMade after this attempt when asked (failures); BullMQ counts every finish.
local function keepOrRemove(set, id, count, age, field, value, stack)
  local key = base .. id
  if count == 0 then
    local attempts = stack and tonumber(rcall('HGET', key, 'atm') or 0) + 1
    removeJobKeys(id)
    return attempts
  end
  rcall('DEL', key .. ':lock')
  local attempts = rcall('HINCRBY', key, 'atm', 1)
  rcall('ZADD', set, now, id)
  if stack then
    rcall('HSET', key, field, value, 'finishedOn', now, 'stacktrace', stack)
    rcall('HDEL', key, 'defa')
  else
    rcall('HSET', key, field, value, 'finishedOn', now)
  end
  if count > 0 or age > 0 then
    local policy = set .. '|' .. count .. '|' .. age
    if not trims[policy] then
      trims[policy] = {set, count, age}
      trimOrder[#trimOrder + 1] = policy
    end
  end
  return attempts
end

-- The first bytes of a reason, never ending inside a UTF-8 sequence (continuation bytes are
-- 0x80-0xBF), so the field stays valid text.
local function clip(reason)
  if #reason <= reasonBytes then return reason end
  local cut = reasonBytes
  while cut > 0 do
    local next = string.byte(reason, cut + 1)
    if next < 0x80 or next >= 0xC0 then break end
    cut = cut - 1
  end
  return string.sub(reason, 1, cut)
end

local touched = {} -- counter → 2 when it counted a reason, else 1
local function count(counter, field, reason)
  if counter == 0 then return end
  local counts, reasons = KEYS[12 + 2 * counter - 1], KEYS[12 + 2 * counter]
  rcall('HINCRBY', counts, field, 1)
  if reason then rcall('HINCRBY', reasons, clip(reason), 1) end
  touched[counter] = (reason or touched[counter] == 2) and 2 or 1
end

-- Every lock in one read.
local lockKeys = {}
for i = 0, n - 1 do lockKeys[i + 1] = base .. ARGV[first + i * 7] .. ':lock' end
local holders = n > 0 and rcall('MGET', unpack(lockKeys)) or {}

local codes = {}
local settledIds = {}
local readyAgain, delayedAgain = false, false
for i = 0, n - 1 do
  local a = first + i * 7
  local id, kind, value, stack = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local counter = tonumber(ARGV[a + 6])
  local key = base .. id
  local holder = holders[i + 1]
  local mine = holder == token or (not holder and rcall('LPOS', KEYS[1], id))
  if not mine then
    codes[#codes + 1] = holder and -6 or -2
  else
    settledIds[#settledIds + 1] = id
    rcall('LREM', KEYS[1], -1, id)
    if kind == 'completed' then
      keepOrRemove(KEYS[2], id, tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), 'returnvalue', value)
      rcall('XADD', KEYS[8], '*', 'event', 'completed', 'jobId', id, 'returnvalue', value, 'prev', 'active')
      count(counter, 'completed')
    elseif kind == 'failed' or kind == 'exhausted' then
      local attempts = keepOrRemove(KEYS[3], id, tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5]), 'failedReason', value, stack)
      rcall('XADD', KEYS[8], '*', 'event', 'failed', 'jobId', id, 'failedReason', value, 'prev', 'active')
      count(counter, 'failed', value)
      if kind == 'exhausted' then
        rcall('XADD', KEYS[8], '*', 'event', 'retries-exhausted', 'jobId', id, 'attemptsMade', attempts)
      end
    else
      local delay = tonumber(ARGV[a + 4])
      rcall('DEL', key .. ':lock')
      rcall('HINCRBY', key, 'atm', 1)
      rcall('HSET', key, 'failedReason', value, 'stacktrace', stack)
      if delay > 0 then
        local due = tonumber(now) + delay
        rcall('HSET', key, 'delay', delay)
        rcall('ZADD', KEYS[4], delayedScore(KEYS[4], due), id)
        rcall('XADD', KEYS[8], 'MAXLEN', '~', maxEvents, '*', 'event', 'delayed', 'jobId', id, 'delay', int(due))
        delayedAgain = true
      else
        requeue(target, KEYS[11], KEYS[12], id, tonumber(rcall('HGET', key, 'priority')) or 0, ARGV[a + 5] == '1')
        rcall('XADD', KEYS[8], 'MAXLEN', '~', maxEvents, '*', 'event', 'waiting', 'jobId', id, 'prev', 'active')
        readyAgain = true
      end
    end
    codes[#codes + 1] = 1
  end
end

for counter, kinds in pairs(touched) do
  local ttl = ARGV[5 + counter]
  rcall('EXPIRE', KEYS[12 + 2 * counter - 1], ttl)
  if kinds == 2 then rcall('EXPIRE', KEYS[12 + 2 * counter], ttl) end
end

-- Settled jobs are no longer candidates for the stalled check.
inChunks('SREM', KEYS[10], settledIds)

for _, policy in ipairs(trimOrder) do
  local set, count, age = trims[policy][1], trims[policy][2], trims[policy][3]
  if age > 0 then
    -- At most 1000 per call, as BullMQ does, so one settle never stalls Redis.
    local old = rcall('ZRANGEBYSCORE', set, '-inf', int(tonumber(now) - age * 1000), 'LIMIT', 0, 1000)
    if #old > 0 then
      for _, id in ipairs(old) do removeJobKeys(id) end
      rcall('ZREM', set, unpack(old))
    end
  end
  if count > 0 then
    local extra = rcall('ZREVRANGE', set, count, -1)
    if #extra > 0 then
      for _, id in ipairs(extra) do removeJobKeys(id) end
      rcall('ZREMRANGEBYRANK', set, 0, -(count + 1))
    end
  end
end

if readyAgain and not paused then rcall('ZADD', KEYS[9], 0, '0') end
if delayedAgain then markNextDelayed(KEYS[4], KEYS[9]) end
rcall('XTRIM', KEYS[8], 'MAXLEN', '~', maxEvents)
if rcall('LLEN', KEYS[5]) == 0 and rcall('LLEN', KEYS[1]) == 0 and rcall('ZCARD', KEYS[11]) == 0 then
  rcall('XADD', KEYS[8], '*', 'event', 'drained')
end
return codes
