-- renew: extend the live grant a fence proves, keeping its token.
-- KEYS[1]  the lease record
-- ARGV[1]  the fence as its record starts: 'v2', holder id, incarnation,
--   token, each followed by a newline
-- ARGV[2]  TTL in ms          ARGV[3]  retention in ms
-- Replies {'renewed'}, or held(record) / {'free'} when the fence is not the
-- live grant (an expired grant is never revived).
return renew_one(KEYS[1], ARGV[1], ARGV[2], ARGV[3], now_us())
