-- Applies the retention policy to the history of some tasks; never deletes a 'running' or 'pending'
-- run, and frees the slot key of every run it deletes.
--
-- KEYS[2i-1], KEYS[2i]  task i's runs index '<tag>:runs' and slot-key set '<tag>:slots'
-- ARGV[1]  cutoff in epoch ms: runs that finished before it are deleted ('' = no age limit)
-- ARGV[2]  keep at most this many of the newest other runs per task ('' = no count limit)
-- Returns the number of runs deleted.
local cutoff = tonumber(ARGV[1])
local keep = tonumber(ARGV[2])
local removed = 0
for i = 1, #KEYS, 2 do
  local runs_key, slots_key = KEYS[i], KEYS[i + 1]
  local base = string.sub(runs_key, 1, -5) .. 'run:'
  local kept = 0
  for _, id in ipairs(redis.call('ZREVRANGEBYLEX', runs_key, '+', '-')) do
    local key = base .. id
    local run = redis.call('HMGET', key, 'status', 'finished_at', 'slot', 'attempt')
    if run[1] ~= 'running' and run[1] ~= 'pending' then
      local too_old = cutoff ~= nil and run[2] and tonumber(run[2]) < cutoff
      local too_many = keep ~= nil and kept >= keep
      if too_old or too_many then
        redis.call('DEL', key)
        redis.call('ZREM', runs_key, id)
        if run[3] then
          redis.call('SREM', slots_key, run[3] .. ':' .. (run[4] or ''))
        end
        removed = removed + 1
      else
        kept = kept + 1
      end
    end
  end
end
return removed
