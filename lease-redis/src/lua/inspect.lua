-- inspect: the live grant of one lease.
-- KEYS[1]  the lease record
-- Replies held(record), {'free'}, or {'corrupt', what is wrong}.
local now = now_us()
local record = read_record(KEYS[1])
if type(record) == 'string' then
  return { 'corrupt', record }
end
if not is_live(record, now) then
  return { 'free' }
end
return held(record, now)
