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
