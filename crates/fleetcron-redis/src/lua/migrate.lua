-- Creates or upgrades the layout's schema version, atomically (safe when many workers start at once).
--
-- KEYS[1]  the schema version key '{<prefix>}:schema'
-- ARGV[1]  this build's schema version
-- Returns the version found before (0 when the key did not exist). A newer version is left as it is.
local stored = redis.call('GET', KEYS[1])
local found = 0
if stored then
  found = tonumber(stored)
  if found == nil then
    return redis.error_reply('ERR fleetcron schema key ' .. KEYS[1] .. ' holds ' .. stored .. ', not a version')
  end
end
if found < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return found
