-- renew_many: renew a batch of grants, each as renew.lua would.
-- KEYS[i]  the lease record of the i-th renewal
-- ARGV[3i - 2], ARGV[3i - 1], ARGV[3i]  the i-th fence's record, its TTL
--   in ms and its stamp (see renew.lua)
-- Replies one renew.lua reply per key, in order: a batch of live grants is
-- answered with plain integers.
local replies = {}
for i = 1, #KEYS do
  replies[i] = renew_one(KEYS[i], ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i])
end
return replies
