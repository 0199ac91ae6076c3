--[[ tidegate: may a batch of a queue start now? Its processes' batches take turns: the next may
start once the last has held the queue's pace for its documents (documents / pace), at the pace
the asking process has now, so a pace raised or cut applies at once to the turn in wait; and
only while fewer of the queue's batches are running than the pace needs (slots), whichever
processes run them. A running batch holds its slot until released, its lease lapses, or its
process's membership of the budget lapses (a process that died mid-batch, within a few intervals).
KEYS: 1 the queue's turn ("<start ms>:<documents>" of the last batch to start), 2 its running
      batches (ZSET of "<process>:<seq>", score = when the lease lapses, ms), 3 the budget's
      members
ARGV: 1 documents of this batch, 2 the queue's pace (documents/s), 3 slots, 4 lease (ms),
      5 the batch's id
Returns 0 when this batch takes the turn and a slot, else the ms to wait before asking again. ]]
local rcall = redis.call
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
rcall('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for _, batch in ipairs(rcall('ZRANGE', KEYS[2], 0, -1)) do
  local lapses = tonumber(rcall('ZSCORE', KEYS[3], string.match(batch, '^([^:]*)')) or '0')
  if lapses < now then
    rcall('ZREM', KEYS[2], batch)
  end
end
if rcall('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  -- Slots free when batches end, which this script does not see: ask again soon.
  return 250
end
local last = rcall('GET', KEYS[1])
if last then
  local start, docs = string.match(last, '^([^:]+):(.+)$')
  local free = tonumber(start) + tonumber(docs) * 1000 / tonumber(ARGV[2])
  if free > now then
    return math.ceil(free - now)
  end
end
-- Kept an hour: a queue idle longer starts its next batch at once anyway.
rcall('SET', KEYS[1], string.format('%.3f', now) .. ':' .. ARGV[1], 'PX', 3600000)
local lease = tonumber(ARGV[4])
rcall('ZADD', KEYS[2], now + lease, ARGV[5])
rcall('PEXPIRE', KEYS[2], lease * 2)
return 0
