-- renew_many: renew a batch of grants, each as renew.lua would.
-- KEYS[i]  the lease record of the i-th renewal
-- ARGV[2i - 1], ARGV[2i]  the i-th fence's record (see renew.lua) and its
--   TTL in ms
-- Replies one renew.lua reply per key, in order: a batch of live grants is
-- answered with plain integers.
local replies = {}
for i = 1, #KEYS do
  replies[i] = renew_one(KEYS[i], ARGV[2 * i - 1], ARGV[2 * i])
end
return replies
