--[[ tidegate: may a batch of a queue start now? Its processes' batches take turns: the next may
start once the last has held the queue's pace for its documents (documents / pace), at the pace
the asking process has now, so a pace raised or cut applies at once to the turn in wait; and
only while fewer of the queue's batches are running than its pace needs (slots: batches a second
times how long the queue's batches have lately run, with half again to spare; one until a batch
has ended), whichever processes run them. One view for every process: a process that has just
joined has run no batch to time. A running batch holds its slot until released (done.lua), its
lease lapses, or its process's membership of the budget lapses (a process that died mid-batch,
within a few intervals).
KEYS: 1 the queue's turn (HASH: start, documents of the last batch to start; took, the queue's
      batches' mean run time, ms), 2 its running batches (ZSET of "<process>:<seq>", score =
      when the lease lapses, ms), 3 the budget's members
ARGV: 1 documents of this batch, 2 the queue's pace (documents/s), 3 lease (ms), 4 the batch's id
Returns 0 when this batch takes the turn and a slot, else the ms to wait before asking again. ]]
local rcall = redis.call
local documents, pace = tonumber(ARGV[1]), tonumber(ARGV[2])
if not (pace > 0) then
  -- No pace, no batch: the asker waits for a pace to be set.
  return 1000
end
rcall('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for _, batch in ipairs(rcall('ZRANGE', KEYS[2], 0, -1)) do
  local lapses = tonumber(rcall('ZSCORE', KEYS[3], string.match(batch, '^([^:]*)')) or '0')
  if lapses < now then
    rcall('ZREM', KEYS[2], batch)
  end
end
local turn = rcall('HMGET', KEYS[1], 'start', 'documents', 'took')
local took = tonumber(turn[3] or '0')
local slots = math.max(1, math.ceil(1.5 * pace / math.max(documents, 1) * took / 1000))
if rcall('ZCARD', KEYS[2]) >= slots then
  -- Slots free when batches end, which this script does not see: ask again in about the time
  -- a batch runs (a process is also woken by its own batch's release), within [20, 250] ms.
  return math.min(250, math.max(20, math.ceil(took)))
end
if turn[1] then
  local free = tonumber(turn[1]) + tonumber(turn[2]) * 1000 / pace
  if free > now then
    return math.ceil(free - now)
  end
end
rcall('HSET', KEYS[1], 'start', string.format('%.3f', now), 'documents', documents)
-- Kept an hour: a queue idle longer starts its next batch at once anyway.
rcall('PEXPIRE', KEYS[1], 3600000)
local lease = tonumber(ARGV[3])
rcall('ZADD', KEYS[2], now + lease, ARGV[4])
rcall('PEXPIRE', KEYS[2], lease * 2)
return 0
