-- inspect: the live grant of one lease.
-- KEYS[1]  the lease record   KEYS[2]  the namespace's token floor
-- ARGV[1]  the restart quarantine in ms (0: off)
-- Replies held(record), {'free'}, quarantined(ms left) or {'corrupt', what
-- is wrong}.
return inspect_one(KEYS[1], KEYS[2], ARGV[1])
