-- renew: extend the live grant a fence proves, keeping its token.
-- KEYS[1]  the lease record
-- ARGV[1..3]  the fence: holder id, incarnation, token
-- ARGV[4]  TTL in ms          ARGV[5]  retention in ms
-- Replies {'renewed'}, or held(record) / {'free'} when the fence is not the
-- live grant (an expired grant is never revived).
local now = now_us()
local record = read_record(KEYS[1])
if not is_live(record, now) then
  return { 'free' }
end
if not is_fence(record, ARGV[1], ARGV[2], ARGV[3]) then
  return held(record, now)
end
write_record(KEYS[1], record.holder, record.incarnation, record.token_text,
  fmt(now + tonumber(ARGV[4]) * 1000), tonumber(ARGV[4]) + tonumber(ARGV[5]))
return { 'renewed' }
