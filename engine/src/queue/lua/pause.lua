--[[ tidegate: pause or resume a queue as BullMQ v5 does: the waiting jobs move between the wait
and paused lists, the meta hash's `paused` field says which, and the marker follows.
KEYS: 1 wait, 2 paused, 3 meta, 4 marker, 5 events, 6 prioritized, 7 delayed
ARGV: 1 'pause' or 'resume' ]]
if ARGV[1] == 'pause' then
  if rcall('HEXISTS', KEYS[3], 'paused') == 1 then return 0 end
  if rcall('EXISTS', KEYS[1]) == 1 then rcall('RENAME', KEYS[1], KEYS[2]) end
  rcall('HSET', KEYS[3], 'paused', 1)
  rcall('DEL', KEYS[4])
  rcall('XADD', KEYS[5], '*', 'event', 'paused')
else
  if rcall('HEXISTS', KEYS[3], 'paused') == 0 then return 0 end
  if rcall('EXISTS', KEYS[2]) == 1 then rcall('RENAME', KEYS[2], KEYS[1]) end
  rcall('HDEL', KEYS[3], 'paused')
  if rcall('LLEN', KEYS[1]) > 0 or rcall('ZCARD', KEYS[6]) > 0 then
    rcall('ZADD', KEYS[4], 0, '0')
  else
    markNextDelayed(KEYS[7], KEYS[4])
  end
  rcall('XADD', KEYS[5], '*', 'event', 'resumed')
end
return 1
