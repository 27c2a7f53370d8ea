-- read value: a marker's value (marker get) or a guarded write's (guarded read).
-- KEYS[1]  the marker or target
-- Replies {'value', bytes}, {'absent'} or {'corrupt', what is wrong}.
local ok, kind = string_kind(KEYS[1])
if not ok then
  return { 'corrupt', 'the key holds a ' .. kind }
end
local value = redis.call('GET', KEYS[1])
if not value then
  return { 'absent' }
end
return { 'value', value }
