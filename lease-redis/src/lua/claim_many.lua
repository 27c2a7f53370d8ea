-- claim_many: a batch of claims, each decided as claim.lua would alone,
-- in order (a later one on the same key sees what an earlier one did).
-- KEYS[1]  the namespace's token floor   KEYS[1 + i]  the i-th lease record
-- ARGV[1]  the restart quarantine in ms (0: off)
-- ARGV[3i - 1], ARGV[3i], ARGV[3i + 1]  the i-th claim: holder id,
--   incarnation and TTL in ms
-- Replies one claim.lua reply (a string) per claim, in order.

-- One read of every key (MGET: see claim.lua).
local values = redis.call('MGET', unpack(KEYS))
local f = read_floor(values[1])
-- Per key, the value an earlier claim of this batch left (false: none).
local now, replies = {}, {}
for i = 1, #KEYS - 1 do
  local key, a = KEYS[i + 1], 3 * i - 1
  local value = now[key]
  if value == nil then
    value = values[i + 1]
  end
  replies[i], now[key] = claim_one(key, value, f, ARGV[1], ARGV[a], ARGV[a + 1], ARGV[a + 2])
end
if f.now then
  redis.call('SET', KEYS[1], fmt(f.floor))
end
return replies
