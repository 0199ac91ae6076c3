--[[ tidegate: helpers every queue script starts with (prepended when the script is built). ]]
local rcall = redis.call

-- Scores beyond 2^47 print inexactly with Lua's default number format; %.0f keeps every digit.
local function int(x) return string.format('%.0f', x) end

-- Delayed score: due ms * 4096 plus a sequence within that millisecond (BullMQ's).
local function delayedScore(delayedKey, due)
  local low = due * 4096
  local top = rcall('ZREVRANGEBYSCORE', delayedKey, int(low + 4095), int(low), 'WITHSCORES', 'LIMIT', 0, 1)
  if top[2] then return int(math.min(tonumber(top[2]) + 1, low + 4095)) end
  return int(low)
end

-- Adds a job to the prioritized set: priority * 2^32 plus a counter, FIFO within a priority.
local function addPrioritized(prioritizedKey, counterKey, priority, id)
  local seq = rcall('INCR', counterKey) % 4294967296
  rcall('ZADD', prioritizedKey, int(priority * 4294967296 + seq), id)
end


-- Makes a job ready to take again, as BullMQ does: in the prioritized set when it has a
-- priority, else first in line (workers take from the right) when LIFO, last otherwise.
local function requeue(target, prioritizedKey, counterKey, id, priority, lifo)
  if priority > 0 then
    addPrioritized(prioritizedKey, counterKey, priority, id)
  elseif lifo then
    rcall('RPUSH', target, id)
  else
    rcall('LPUSH', target, id)
  end
end

-- Where ready jobs go: paused when the queue is paused (its meta hash says so), else wait.
-- Returns that list's key and whether the queue is paused.
local function readyList(metaKey, waitKey, pausedKey)
  local paused = rcall('HEXISTS', metaKey, 'paused') == 1
  return paused and pausedKey or waitKey, paused
end

-- Wakes a blocked worker when the earliest delayed job is due: the marker's score is its due
-- time (ms), as BullMQ's workers read it.
local function markNextDelayed(delayedKey, markerKey)
  local first = rcall('ZRANGE', delayedKey, 0, 0, 'WITHSCORES')
  if first[2] then rcall('ZADD', markerKey, tonumber(first[2]) / 4096, '1') end
end

-- `command key members...` for every member of `list`, 5000 at a time: Lua's unpack has a
-- stack limit, and one call per member would be slow.
local function inChunks(command, key, list)
  for i = 1, #list, 5000 do
    rcall(command, key, unpack(list, i, math.min(i + 4999, #list)))
  end
end
