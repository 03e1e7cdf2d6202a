-- A page of one task's history, newest first (run ids are UUIDv7s: lexical order is creation order).
--
-- KEYS[1]  the task's runs index '<tag>:runs' (sorted set, score 0, member = run id); run hashes are
--          '<tag>:run:<run_id>'
-- ARGV[1]  the upper bound: '+' for the newest, or '(' .. run_id for the runs before that one
-- ARGV[2]  the page size (at least 1)
-- Returns one flat field/value array (HGETALL) per run.
local base = string.sub(KEYS[1], 1, -5) .. 'run:'
local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], '-', 'LIMIT', 0, tonumber(ARGV[2]))
local reply = {}
for i, id in ipairs(ids) do
  reply[i] = redis.call('HGETALL', base .. id)
end
return reply
