--[[ tidegate: one process's control tick on a database's write budget: renew its membership
(with its queue, weight and backlog), drop lapsed members, report the batches it started and
finished since its last tick (times converted to Redis' clock, so hosts' clocks may disagree),
add its transient write errors to the shared count, take or keep the leader lease, and read its
queue's pace.
KEYS: 1 budget, 2 members, 3 member-info, 4 in-flight, 5 finished
ARGV: 1 process id, 2 lease/membership ttl (ms), 3 new write errors, 4 queue, 5 weight,
      6 backlog (jobs waiting), 7 how long finished batches are kept (ms), 8 the queue's largest
      batch ('' when the controller chooses), 9 S = batches started, then S triples (seq, ms ago, documents),
      then E = batches finished, then E quadruples (seq, started ms ago, ended ms ago, documents)
Returns {is_leader, members, members of this queue, pace of this queue ('' when none is
current: "rate:batch:..."), errors (total), now (ms), whether this process is the queue's member
with the lowest id (the one that reports the queue's depth)}. ]]
local rcall = redis.call
local now = now_ms
local id, ttl, errors = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local queue, keep = ARGV[4], tonumber(ARGV[7])

rcall('ZADD', KEYS[2], now + ttl, id)
for _, gone in ipairs(rcall('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do
  rcall('HDEL', KEYS[3], gone)
end
rcall('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
-- Fields are joined by ':', which a queue name cannot hold, with the queue last; the largest
-- batch only when set, so that processes of the release before it read the rest as before.
local largest = ''
if ARGV[8] ~= '' then largest = ARGV[8] .. ':' end
rcall('HSET', KEYS[3], id, ARGV[5] .. ':' .. ARGV[6] .. ':' .. largest .. queue)

local i = 9
local started = tonumber(ARGV[i])
for n = 1, started do
  local seq, ago, docs = ARGV[i + 3 * n - 2], tonumber(ARGV[i + 3 * n - 1]), ARGV[i + 3 * n]
  rcall('HSET', KEYS[4], id .. ':' .. seq, (now - ago) .. ':' .. docs .. ':' .. queue)
end
i = i + 3 * started + 1
local finished = tonumber(ARGV[i])
for n = 1, finished do
  local b = i + 4 * (n - 1)
  local seq, from, to, docs = ARGV[b + 1], now - tonumber(ARGV[b + 2]), now - tonumber(ARGV[b + 3]), ARGV[b + 4]
  rcall('HDEL', KEYS[4], id .. ':' .. seq)
  rcall('ZADD', KEYS[5], to, id .. ':' .. seq .. ':' .. from .. ':' .. to .. ':' .. docs .. ':' .. queue)
end
rcall('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - keep)

local members, mine, first = 0, 0, nil
local infos = rcall('HGETALL', KEYS[3])
for n = 1, #infos, 2 do
  members = members + 1
  if string.match(infos[n + 1], '([^:]*)$') == queue then
    mine = mine + 1
    if not first or infos[n] < first then first = infos[n] end
  end
end

local total = rcall('HINCRBY', KEYS[1], 'errors', errors)
local b = rcall('HMGET', KEYS[1], 'leader', 'leader_until', 'pace:' .. queue, 'pace_until')
local leader = b[1]
if leader == id or not leader or tonumber(b[2] or '0') < now then
  rcall('HSET', KEYS[1], 'leader', id, 'leader_until', now + ttl)
  leader = id
end
-- The budget outlives a short gap between processes, and no more.
for k = 1, 5 do
  rcall('PEXPIRE', KEYS[k], math.max(ttl * 10, keep))
end

local pace = ''
if b[3] and tonumber(b[4] or '0') >= now then
  pace = b[3]
end
return {leader == id and 1 or 0, members, mine, pace, total, now, first == id and 1 or 0}
