-- The idle poll: which tasks want attention now, by the server's clock. One round trip.
--
-- KEYS[1]  the attention index (sorted set, score = attention epoch ms, member = task id)
-- ARGV[1]  the store's clock offset in whole milliseconds (added to TIME)
-- ARGV[2]  the store's last reading in epoch ms (its clock never goes back), or ''
-- ARGV[3]  the maximum number of ids
-- Returns {now_ms, {id, ...}}: the ids whose attention time is at or before now, most overdue first.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + tonumber(ARGV[1])
local floor = tonumber(ARGV[2])
if floor and floor > now then
  now = floor
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
return {now, ids}
