-- Reads task state documents and the server clock in one atomic step.
--
-- KEYS: the state hash of each task, in the caller's order.
-- ARGV: none.
-- Returns {seconds, microseconds, doc_1, version_1, doc_2, version_2, ...}: the server's TIME, then
-- each task's `doc` (TaskState JSON) and `version` fields (nil when absent: version 0).
local time = redis.call('TIME')
local reply = {time[1], time[2]}
for i, key in ipairs(KEYS) do
  local fields = redis.call('HMGET', key, 'doc', 'version')
  reply[2 * i + 1] = fields[1]
  reply[2 * i + 2] = fields[2]
end
return reply
