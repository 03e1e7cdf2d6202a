-- Commits a batch of task mutations: all of them or none, each guarded by the version of the task
-- that its decision was made on (an absent task has version 0).
--
-- KEYS[1]            the task index (sorted set, score 0, member = task id)
-- KEYS[2]            the attention index (sorted set, score = attention epoch ms, member = task id)
-- KEYS[3i], [3i+1], [3i+2]
--                    task i's state hash, runs index (sorted set, score 0, member = run id) and
--                    slot-key set (members '<slot_ms>:<attempt>'); run hashes are '<tag>:run:<run_id>',
--                    derived from the state key, so every key of a task shares its hash tag.
-- ARGV[1]            the number of tasks; then, for each task, in KEYS order:
--   id, expected version, has_state ('1' or '0'), doc, attention_ms ('' = none), mark ('' = none: the
--   high-water mark in epoch ms rounded down, which read_claims.lua compares with a claim's floor),
--   floor ('' = not a claim: a claim's earliest wanted slot in epoch ms, rounded up),
--   n_inserts, then per insert: run_id, slot key ('' = no slot), n_fields, field, value, ...
--   n_updates, then per update: run_id, n_set, field, value, ..., n_del, field, ...
--
-- Returns one of
--   {'ok'}                                              everything was written;
--   {'conflict', sec, usec, i, doc, version, ...}       nothing was written: task i (1-based) changed
--                                                       since it was read (its current doc and version,
--                                                       and the server's TIME, so the caller can decide
--                                                       again without another round trip); for a claim
--                                                       whose task's mark is now at or after its floor,
--                                                       doc is nil and version -1 (accounted: nothing to
--                                                       decide, no document sent);
--   {'duplicate', i, what, detail}                      nothing was written: a new run of task i hits a
--                                                       unique key ('slot' with the slot key, or 'run'
--                                                       with the run id).

local count = tonumber(ARGV[1])
local pos = 2
local tasks = {}
for i = 1, count do
  local task = {
    id = ARGV[pos],
    expected = tonumber(ARGV[pos + 1]),
    has_state = ARGV[pos + 2] == '1',
    doc = ARGV[pos + 3],
    attention = ARGV[pos + 4],
    mark = ARGV[pos + 5],
    floor = tonumber(ARGV[pos + 6]),
    inserts = {},
    updates = {},
  }
  pos = pos + 7
  local inserts = tonumber(ARGV[pos])
  pos = pos + 1
  for j = 1, inserts do
    local fields = tonumber(ARGV[pos + 2])
    task.inserts[j] = { run_id = ARGV[pos], slot = ARGV[pos + 1], first = pos + 3, fields = fields }
    pos = pos + 3 + 2 * fields
  end
  local updates = tonumber(ARGV[pos])
  pos = pos + 1
  for j = 1, updates do
    local set = tonumber(ARGV[pos + 1])
    local update = { run_id = ARGV[pos], set_first = pos + 2, set = set }
    pos = pos + 2 + 2 * set
    update.del = tonumber(ARGV[pos])
    update.del_first = pos + 1
    pos = pos + 1 + update.del
    task.updates[j] = update
  end
  tasks[i] = task
end

local function run_key(i, run_id)
  -- '<tag>:state' -> '<tag>:run:<run_id>'
  return string.sub(KEYS[3 * i], 1, -6) .. 'run:' .. run_id
end

local function slice(first, length)
  local values = {}
  for k = 0, length - 1 do
    values[k + 1] = ARGV[first + k]
  end
  return values
end

-- 1. Every task still has the version its decision was made on.
local conflicts = {}
for i, task in ipairs(tasks) do
  local stored = redis.call('HMGET', KEYS[3 * i], 'version', 'attention_at')
  if tonumber(stored[1] or '0') ~= task.expected then
    conflicts[#conflicts + 1] = i
  end
  task.previous_attention = stored[2] or ''
end
if #conflicts > 0 then
  local time = redis.call('TIME')
  local reply = {'conflict', time[1], time[2]}
  for _, i in ipairs(conflicts) do
    local mark = tonumber(redis.call('HGET', KEYS[3 * i], 'mark') or '')
    reply[#reply + 1] = i
    if tasks[i].floor and mark and mark >= tasks[i].floor then
      reply[#reply + 1] = false
      reply[#reply + 1] = -1
    else
      local fields = redis.call('HMGET', KEYS[3 * i], 'doc', 'version')
      reply[#reply + 1] = fields[1]
      reply[#reply + 1] = fields[2]
    end
  end
  return reply
end

-- 2. No new run repeats a stored (or another new) run id or slot key of its task.
for i, task in ipairs(tasks) do
  local seen = {}
  for _, insert in ipairs(task.inserts) do
    if seen['r' .. insert.run_id] or redis.call('EXISTS', run_key(i, insert.run_id)) == 1 then
      return {'duplicate', i, 'run', insert.run_id}
    end
    seen['r' .. insert.run_id] = true
    if insert.slot ~= '' then
      if seen['s' .. insert.slot] or redis.call('SISMEMBER', KEYS[3 * i + 2], insert.slot) == 1 then
        return {'duplicate', i, 'slot', insert.slot}
      end
      seen['s' .. insert.slot] = true
    end
  end
end

-- 3. Write.
for i, task in ipairs(tasks) do
  local state_key, runs_key, slots_key = KEYS[3 * i], KEYS[3 * i + 1], KEYS[3 * i + 2]
  -- Every write moves the version on (the check above proved it is still `expected`).
  if task.has_state then
    redis.call('HSET', state_key, 'version', task.expected + 1, 'doc', task.doc, 'attention_at', task.attention)
    if task.mark ~= '' then
      redis.call('HSET', state_key, 'mark', task.mark)
    end
    if task.attention ~= task.previous_attention then
      if task.attention == '' then
        redis.call('ZREM', KEYS[2], task.id)
      else
        redis.call('ZADD', KEYS[2], task.attention, task.id)
      end
    end
  else
    redis.call('HSET', state_key, 'version', task.expected + 1)
  end
  if task.expected == 0 then
    -- The task's first write: index it.
    redis.call('ZADD', KEYS[1], 0, task.id)
  end
  for _, insert in ipairs(task.inserts) do
    redis.call('HSET', run_key(i, insert.run_id), unpack(slice(insert.first, 2 * insert.fields)))
    redis.call('ZADD', runs_key, 0, insert.run_id)
    if insert.slot ~= '' then
      redis.call('SADD', slots_key, insert.slot)
    end
  end
  for _, update in ipairs(task.updates) do
    local key = run_key(i, update.run_id)
    -- Only an existing run of this task changes (a run id of another task matches nothing here).
    if redis.call('EXISTS', key) == 1 then
      if update.set > 0 then
        redis.call('HSET', key, unpack(slice(update.set_first, 2 * update.set)))
      end
      if update.del > 0 then
        redis.call('HDEL', key, unpack(slice(update.del_first, update.del)))
      end
    end
  end
end
return {'ok'}
