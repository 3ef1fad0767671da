-- Prelude shared by the scripts below (they are sent as one text each).
-- KEYS[1] is the room's sequence, KEYS[2] its history stream.
--
-- The room's last assigned id. The sequence key holds it; if that key is
-- gone (the room's first message, or Redis lost the key) the newest entry
-- still in the history stream says where ids had got to. Stream entry ids
-- are "<message id>-0".
local function last_id()
  local last = tonumber(redis.call('GET', KEYS[1]))
  if last then return last end
  local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if newest[1] then return tonumber(string.match(newest[1][1], '^(%d+)')) end
  return 0
end
