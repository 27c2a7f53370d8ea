-- release: end the grant a fence proves, if it is the live one.
-- KEYS[1]  the lease record
-- ARGV[1..3]  the fence: holder id, incarnation, token
-- ARGV[4]  retention in ms    ARGV[5]  channel    ARGV[6]  lease key (message)
-- Replies 1 when released, 0 when there was nothing to release. The record
-- stays, marked ended, for the retention time so the next token is higher.
local now = now_us()
local record = read_record(KEYS[1])
if not is_live(record, now) or not is_fence(record, ARGV[1], ARGV[2], ARGV[3]) then
  return 0
end
write_record(KEYS[1], record.holder, record.incarnation, record.token_text, '0', tonumber(ARGV[4]))
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
