-- marker delete: delete a marker only if it holds the given value.
-- KEYS[1]  the marker         ARGV[1]  the value
-- Replies {'deleted'}, {'absent'}, {'conflict', existing value} or
-- {'corrupt', what is wrong}.
local existing, wrong = get_string(KEYS[1])
if wrong then
  return { 'corrupt', wrong }
end
if not existing then
  return { 'absent' }
end
if existing ~= ARGV[1] then
  return { 'conflict', existing }
end
redis.call('DEL', KEYS[1])
return { 'deleted' }
