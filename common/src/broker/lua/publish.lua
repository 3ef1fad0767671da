-- Publish one message atomically: next id, history, pub/sub.
-- ARGV: [1] channel, [2] floor (no id at or below it is handed out),
--       [3] history length kept, [4] room, [5] author, [6] text, [7] via.
-- Returns {id, ts}: the rest of the message is what the caller sent.
--
-- History entries are "<id>-0" with fields a (author), m (text), t (ts) and
-- v (via); the live copy is the Message as JSON (cjson, Redis' own encoder).
-- Redis does not roll a script back: the command that can fail (XADD, if
-- the stream somehow holds a newer entry) goes first, so a failure leaves
-- nothing written and no id used up.
local id = math.max(last_id(), tonumber(ARGV[2])) + 1
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], string.format('%d-0', id),
  'a', ARGV[5], 'm', ARGV[6], 't', string.format('%d', ts), 'v', ARGV[7])
redis.call('SET', KEYS[1], string.format('%d', id))
redis.call('PUBLISH', ARGV[1], cjson.encode({
  id = id, room = ARGV[4], author = ARGV[5], message = ARGV[6], ts = ts, via = ARGV[7]
}))
return {id, ts}
