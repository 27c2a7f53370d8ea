-- renew: extend the live grant a fence proves, keeping its token.
-- KEYS[1]  the lease record
-- ARGV[1]  the fence's record, as is_own in the prelude takes it
-- ARGV[2]  TTL in ms          ARGV[3]  the renewal's stamp, ORIGIN:SEQ
-- Replies 1 when renewed, {'kept', µs left} when a later renewal of the
-- same store was applied already, else held(record) or 0 (free) when the
-- fence is not the live grant (an expired grant is never revived: its key
-- is gone).
return renew_one(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
