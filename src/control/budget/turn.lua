--[[ tidegate: may a batch of a queue start now? Its processes' batches take turns: the next may
start once the last has held the queue's pace for its documents (documents / pace), at the pace
the asking process has now, so a pace raised or cut applies at once to the turn in wait.
KEYS: 1 the queue's turn ("<start ms>:<documents>" of the last batch to start)
ARGV: 1 documents of this batch, 2 the queue's pace (documents/s)
Returns 0 when this batch takes the turn (it is recorded as the last), else the ms to wait
before asking again. ]]
local rcall = redis.call
local t = rcall('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
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
return 0
