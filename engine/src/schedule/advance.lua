--[[ tidegate: move a schedule's handled-through mark from the value a process read to a later
one, once: replicas that read the same mark race, one moves it and reports the firings missed
in between, the others see it moved.
KEYS: 1 the schedule's hash
ARGV: 1 the mark read (ms), 2 the new mark (ms), 3 firings missed in between, 4 the latest of
them (ms; empty when none)
Returns 1 when this call moved the mark, 0 when another had. ]]
local rcall = redis.call
if rcall('HGET', KEYS[1], 'through') ~= ARGV[1] then return 0 end
rcall('HSET', KEYS[1], 'through', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  rcall('HINCRBY', KEYS[1], 'missed', ARGV[3])
  rcall('HSET', KEYS[1], 'last_missed', ARGV[4])
end
return 1
