-- Read a room's last id, raising it to a floor first if it is lower (Redis
-- lost data that some instance still remembers).
-- ARGV: [1] floor. Returns {last id as stored, last id now}.
local stored = last_id()
local current = math.max(stored, tonumber(ARGV[1]))
if current > 0 and tonumber(redis.call('GET', KEYS[1])) ~= current then
  redis.call('SET', KEYS[1], string.format('%d', current))
end
return {stored, current}
