-- marker delete: delete a marker only if it holds the given value.
-- KEYS[1]  the marker         ARGV[1]  the value
-- Replies {'deleted'}, {'absent'}, {'conflict', existing value} or
-- {'corrupt', what is wrong}.
local ok, kind = string_kind(KEYS[1])
if not ok then
  return { 'corrupt', 'the marker holds a ' .. kind }
end
local existing = redis.call('GET', KEYS[1])
if not existing then
  return { 'absent' }
end
if existing ~= ARGV[1] then
  return { 'conflict', existing }
end
redis.call('DEL', KEYS[1])
return { 'deleted' }
