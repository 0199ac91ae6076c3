--[[ tidegate: release a lock only if it is still ours (it may have expired and been taken by
another replica since).
KEYS: 1 the lock
ARGV: 1 our token
Returns 1 when released, 0 when the lock was not ours. ]]
local rcall = redis.call
if rcall('GET', KEYS[1]) == ARGV[1] then return rcall('DEL', KEYS[1]) end
return 0
