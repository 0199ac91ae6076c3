--[[ tidegate: recover stalled jobs with BullMQ's semantics. At most one check per interval runs
across all workers (the stalled-check key's expiry). A job in `stalled` (marked at the previous
check) whose lock has expired goes back to the front of wait with its stalled counter raised;
past the maximum it is marked with a deferred failure that the next taker turns into a final
failure. Then every job now active is marked for the next check.
KEYS: 1 stalled-check, 2 stalled, 3 active, 4 wait, 5 paused, 6 meta, 7 marker, 8 events
ARGV: 1 key base, 2 now (ms), 3 interval ms, 4 max stalled count
Returns {ran (1/0), requeued ids, ids past the maximum}. ]]
local base, now, interval, maxStalled = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if rcall('EXISTS', KEYS[1]) == 1 then return {0, {}, {}} end
rcall('SET', KEYS[1], now, 'PX', interval)

local target, paused = readyList(KEYS[6], KEYS[4], KEYS[5])
local requeued, overLimit = {}, {}
local candidates = rcall('SMEMBERS', KEYS[2])
rcall('DEL', KEYS[2])
for _, id in ipairs(candidates) do
  local key = base .. id
  if rcall('EXISTS', key .. ':lock') == 0 and rcall('LREM', KEYS[3], 1, id) > 0 then
    local count = rcall('HINCRBY', key, 'stc', 1)
    if count > maxStalled then
      rcall('HSET', key, 'defa', 'job stalled more than allowable limit')
      overLimit[#overLimit + 1] = id
    end
    rcall('RPUSH', target, id)
    rcall('XADD', KEYS[8], '*', 'event', 'waiting', 'jobId', id, 'prev', 'active')
    rcall('XADD', KEYS[8], '*', 'event', 'stalled', 'jobId', id)
    requeued[#requeued + 1] = id
  end
end
if #requeued > 0 and not paused then rcall('ZADD', KEYS[7], 0, '0') end

local active = rcall('LRANGE', KEYS[3], 0, -1)
inChunks('SADD', KEYS[2], active)
return {1, requeued, overLimit}
