-- Publish one message atomically: idempotency check, next id, history,
-- expiry, pub/sub.
-- KEYS: [1] sequence, [2] history, [3] the idempotency key's record (only
--       when the publish carries a key).
-- ARGV: [1] the room's live channel, [2] floor (no id at or below it is
--       handed out), [3] history length kept, [4] room, [5] author,
--       [6] text, [7] via, [8] seconds the room's keys live after its last
--       message, [9] seconds an idempotency key is remembered, [10] how to
--       publish: PUBLISH on one Redis, SPUBLISH (sharded, within the room's
--       shard) on a cluster.
-- Returns {0, id, ts, ''} for a new message (the rest of it is what the
-- caller sent), or {1, 0, 0, <the first message's JSON>} when the key was used
-- already and nothing new was stored.
--
-- History entries are "<id>-0" with fields a (author), m (text), t (ts) and
-- v (via); the live copy and the idempotency record are the Message as
-- JSON (cjson, Redis' own encoder). Redis does not roll a script back: the
-- command that can fail (XADD, if the stream somehow holds a newer entry,
-- or a write refused for lack of memory) goes first, so a failure leaves
-- nothing written and no id used up.
if KEYS[3] then
  local first = redis.call('GET', KEYS[3])
  if first then return {1, 0, 0, first} end
end
local id = math.max(last_id(), tonumber(ARGV[2])) + 1
local now = redis.call('TIME')
local ts = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], string.format('%d-0', id),
  'a', ARGV[5], 'm', ARGV[6], 't', string.format('%d', ts), 'v', ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[8])
redis.call('SET', KEYS[1], string.format('%d', id), 'EX', ARGV[8])
local message = cjson.encode({
  id = id, room = ARGV[4], author = ARGV[5], message = ARGV[6], ts = ts, via = ARGV[7]
})
if KEYS[3] then redis.call('SET', KEYS[3], message, 'EX', ARGV[9]) end
redis.call(ARGV[10], ARGV[1], message)
return {0, id, ts, ''}
