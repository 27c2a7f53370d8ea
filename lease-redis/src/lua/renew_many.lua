-- renew_many: renew a batch of grants, each as renew.lua would.
-- KEYS[i]  the lease record of the i-th renewal
-- ARGV[1]  retention in ms
-- ARGV[2i], ARGV[2i + 1]  the i-th fence as its record starts (see
--   renew.lua) and its TTL in ms
-- Replies one renew.lua reply per key, in order. One clock reading serves
-- the whole batch.
local now = now_us()
local replies = {}
for i = 1, #KEYS do
  replies[i] = renew_one(KEYS[i], ARGV[2 * i], ARGV[2 * i + 1], ARGV[1], now)
end
return replies
