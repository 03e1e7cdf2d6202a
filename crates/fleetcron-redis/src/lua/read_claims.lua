-- Reads task state documents for a claim, and the server clock, in one atomic step, leaving out the
-- tasks already accounted for up to the slot the claim wants.
--
-- KEYS: the state hash of each task, in the caller's order.
-- ARGV: each task's floor (epoch ms, rounded up), in KEYS order.
-- Returns {seconds, microseconds, accounted_1, doc_1, version_1, ...}: the server's TIME, then per task
-- `accounted` 1 (its `mark`, the high-water mark in epoch ms rounded down, is at or after its floor:
-- neither doc nor version is sent) or 0 with its `doc` and `version` fields (nil when absent). A task
-- without a mark (written before marks) is never left out.
local time = redis.call('TIME')
local reply = {time[1], time[2]}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HMGET', key, 'mark', 'version')
  local mark = tonumber(fields[1] or '')
  local floor = tonumber(ARGV[i] or '')
  if mark and floor and mark >= floor then
    reply[3 * i] = 1
    reply[3 * i + 1] = false
    reply[3 * i + 2] = false
  else
    reply[3 * i] = 0
    reply[3 * i + 1] = redis.call('HGET', key, 'doc')
    reply[3 * i + 2] = fields[2]
  end
end
return reply
