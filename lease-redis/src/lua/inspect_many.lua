-- inspect_many: what inspect.lua replies, for each of a page of keys.
-- KEYS[i]  a lease record
-- Replies one inspect.lua reply per key, in order.
local replies = {}
for i = 1, #KEYS do
  replies[i] = inspect_one(KEYS[i])
end
return replies
