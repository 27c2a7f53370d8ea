-- read_values: what read_value.lua replies, for each of a page of keys.
-- KEYS[i]  a marker
-- Replies one read_value.lua reply per key, in order.
local replies = {}
for i = 1, #KEYS do
  replies[i] = read_one(KEYS[i])
end
return replies
