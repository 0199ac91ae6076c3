--[[ tidegate: count the names of the jobs that wait to run: the next ones of wait, paused,
prioritized and delayed, up to a sample of each.
KEYS: 1 wait, 2 paused, 3 prioritized, 4 delayed
ARGV: 1 key base, 2 most ids looked at per key
Returns {name, count, name, count, ...}; a job without a name counts under ''. ]]
local base, sample = ARGV[1], tonumber(ARGV[2])
local counts, order = {}, {}
local function count(ids)
  for _, id in ipairs(ids) do
    local name = rcall('HGET', base .. id, 'name')
    if name or rcall('EXISTS', base .. id) == 1 then
      name = name or ''
      if not counts[name] then
        counts[name] = 0
        order[#order + 1] = name
      end
      counts[name] = counts[name] + 1
    end
  end
end
count(rcall('LRANGE', KEYS[1], -sample, -1))
count(rcall('LRANGE', KEYS[2], -sample, -1))
count(rcall('ZRANGE', KEYS[3], 0, sample - 1))
count(rcall('ZRANGE', KEYS[4], 0, sample - 1))
local out = {}
for _, name in ipairs(order) do
  out[#out + 1] = name
  out[#out + 1] = counts[name]
end
return out
