-- guarded write: write a value only while a fence is the live grant.
-- KEYS[1]  the lease record   KEYS[2]  the target
-- ARGV[1..3]  the fence: holder id, incarnation, token
-- ARGV[4]  the value
-- Replies {'written'}, or held(record) / {'free'} with nothing written, or
-- {'corrupt', kind} when the target holds something other than a string.
local record = read_record(KEYS[1])
if not is_live(record) then
  return { 'free' }
end
if not is_fence(record, ARGV[1], ARGV[2], ARGV[3]) then
  return held(record)
end
local ok, kind = string_kind(KEYS[2])
if not ok then
  return { 'corrupt', 'the target holds a ' .. kind }
end
redis.call('SET', KEYS[2], ARGV[4])
return { 'written' }
