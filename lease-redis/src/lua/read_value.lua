-- read value: a marker's value (marker get) or a guarded write's (guarded read).
-- KEYS[1]  the marker or target
-- Replies {'value', bytes}, {'absent'} or {'corrupt', what is wrong}.
local value, wrong = get_string(KEYS[1])
if wrong then
  return { 'corrupt', wrong }
end
if not value then
  return { 'absent' }
end
return { 'value', value }
