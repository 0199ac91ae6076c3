--[[ tidegate: the leader publishes its decision, if it is still the leader: one `pace:<queue>`
field per queue ("rate:batch:cost per batch:cost per document", '' for costs not learned) and
what it decided from (for the back-office: budget, live load, limiting signal, CPU, latencies
and their targets).
KEYS: 1 budget
ARGV: 1 process id, 2 ttl (ms), 3.. field, value pairs ('' = not measured)
Returns 1 when published, 0 when the lease had passed to another process. ]]
local rcall = redis.call
if rcall('HGET', KEYS[1], 'leader') ~= ARGV[1] then
  return 0
end
local now = now_ms
rcall('HSET', KEYS[1], 'pace_until', now + tonumber(ARGV[2]), 'decided_at', now,
  unpack(ARGV, 3))
return 1
