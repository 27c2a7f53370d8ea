-- marker put: set a TTL-less marker if absent or already equal.
-- KEYS[1]  the marker         ARGV[1]  the value
-- Replies {'set'}, {'conflict', existing value} or {'corrupt', what is wrong}.
local existing, wrong = get_string(KEYS[1])
if wrong then
  return { 'corrupt', wrong }
end
if not existing then
  redis.call('SET', KEYS[1], ARGV[1])
  return { 'set' }
end
if existing == ARGV[1] then
  return { 'set' }
end
return { 'conflict', existing }
