--[[ tidegate: Redis' clock, read once at the top of every control script (the budget's, the
turns', the governor's; prepended to each), so that all their times are one clock's, rounded
one way: `now`, ms since the epoch with the microseconds as its fraction (turns space batches
finer than a ms); `now_ms`, the same instant in whole ms, for what is stored as text and read
back as an integer. ]]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + tonumber(clock[2]) / 1000
local now_ms = math.floor(now)
