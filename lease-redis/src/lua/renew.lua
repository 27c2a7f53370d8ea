-- renew: extend the live grant a fence proves, keeping its token.
-- KEYS[1]  the lease record
-- ARGV[1..3]  the fence: holder id, incarnation, token
-- ARGV[4]  TTL in ms          ARGV[5]  retention in ms
-- Replies {'renewed'}, or held(record) / {'free'} when the fence is not the
-- live grant (an expired grant is never revived).
return renew_one(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], now_us())
