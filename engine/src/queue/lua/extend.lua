--[[ tidegate: extend the locks a worker holds.
KEYS: 1 stalled
ARGV: 1 key base, 2 lock token, 3 lock ms, 4.. job ids
Returns the ids whose lock is no longer this token's (lost: the job was recovered as stalled). ]]
local base, token, lockMs = ARGV[1], ARGV[2], ARGV[3]
local lost = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local lockKey = base .. id .. ':lock'
  if rcall('GET', lockKey) == token then
    rcall('SET', lockKey, token, 'PX', lockMs)
    rcall('SREM', KEYS[1], id)
  else
    lost[#lost + 1] = id
  end
end
return lost
