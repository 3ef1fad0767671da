-- Publish one message atomically: next id, history, pub/sub.
-- ARGV: [1] channel, [2] floor (no id at or below it is handed out),
--       [3] history length kept, [4] room, [5] author and [6] text, each
--       already a JSON string literal, [7] via.
-- Returns the message as JSON, exactly as stored and published.
--
-- Redis does not roll a script back: the command that can fail (XADD, if
-- the stream somehow holds a newer entry) goes first, so a failure leaves
-- nothing written and no id used up.
local id = math.max(last_id(), tonumber(ARGV[2])) + 1
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local payload = string.format(
  '{"id":%d,"room":"%s","author":%s,"message":%s,"ts":%d,"via":"%s"}',
  id, ARGV[4], ARGV[5], ARGV[6], ts, ARGV[7])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], string.format('%d-0', id), 'm', payload)
redis.call('SET', KEYS[1], string.format('%d', id))
redis.call('PUBLISH', ARGV[1], payload)
return payload
