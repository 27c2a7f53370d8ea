-- release: end the grant a fence proves, if it is the live one.
-- KEYS[1]  the lease record
-- ARGV[1]  the fence as its record starts (see own_ends in the prelude)
-- ARGV[2]  retention in ms    ARGV[3]  channel    ARGV[4]  lease key (message)
-- Replies 1 when released, 0 when there was nothing to release. The record
-- stays, marked ended, for the retention time so the next token is higher.
local ends = own_ends(redis.pcall('GET', KEYS[1]), ARGV[1])
if not ends or ends <= now_us() then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1] .. '0', 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
