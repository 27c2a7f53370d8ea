-- marker put: set a TTL-less marker if absent or already equal.
-- KEYS[1]  the marker         ARGV[1]  the value
-- Replies {'set'}, {'conflict', existing value} or {'corrupt', what is wrong}.
local ok, kind = string_kind(KEYS[1])
if not ok then
  return { 'corrupt', 'the marker holds a ' .. kind }
end
local existing = redis.call('GET', KEYS[1])
if not existing then
  redis.call('SET', KEYS[1], ARGV[1])
  return { 'set' }
end
if existing == ARGV[1] then
  return { 'set' }
end
return { 'conflict', existing }
