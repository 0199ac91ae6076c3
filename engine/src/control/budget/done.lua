--[[ tidegate: a batch of a queue has ended: its slot is free, and how long it ran (from taking
its turn) joins the queue's mean run time, which sets how many of its batches may run at once
(turn.lua).
KEYS: 1 the queue's turn (HASH), 2 its running batches (ZSET)
ARGV: 1 the batch's id, 2 the lease it took (ms) ]]
local rcall = redis.call
local lapses = rcall('ZSCORE', KEYS[2], ARGV[1])
if not lapses then
  -- Lapsed already, or never taken: nothing to time.
  return 0
end
rcall('ZREM', KEYS[2], ARGV[1])
local took = now - (tonumber(lapses) - tonumber(ARGV[2]))
local mean = tonumber(rcall('HGET', KEYS[1], 'took') or '0')
if mean > 0 then
  took = 0.8 * mean + 0.2 * took
end
rcall('HSET', KEYS[1], 'took', string.format('%.1f', took))
rcall('PEXPIRE', KEYS[1], 3600000)
return 1
