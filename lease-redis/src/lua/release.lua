-- release: end the grant a fence proves, if it is the live one.
-- KEYS[1]  the lease record
-- ARGV[1]  the fence's record (see is_own in the prelude)
-- ARGV[2]  channel            ARGV[3]  lease key (the message)
-- Replies 1 when released, 0 when there was nothing to release. The
-- namespace's token floor keeps the next token higher.
if not is_own(KEYS[1], ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
