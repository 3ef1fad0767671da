-- Read a room's last id, raising it to a floor first if it is lower (Redis
-- lost data, or let the room expire, while some instance still remembers).
-- ARGV: [1] floor, [2] seconds the room's keys live after a write.
-- Returns {last id as stored, last id now}.
local stored = last_id()
local current = math.max(stored, tonumber(ARGV[1]))
if current > 0 and tonumber(redis.call('GET', KEYS[1])) ~= current then
  redis.call('SET', KEYS[1], string.format('%d', current), 'EX', ARGV[2])
end
return {stored, current}
