-- renew_many: renew a batch of grants, each as renew.lua would.
-- KEYS[i]  the lease record of the i-th renewal
-- ARGV[1]  retention in ms
-- ARGV[2 + 4(i-1) ..]  the i-th fence: holder id, incarnation, token; then
--   its TTL in ms
-- Replies one renew.lua reply per key, in order. One clock reading serves
-- the whole batch.
local now = now_us()
local replies = {}
for i = 1, #KEYS do
  local at = 2 + (i - 1) * 4
  replies[i] = renew_one(KEYS[i], ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3], ARGV[1], now)
end
return replies
