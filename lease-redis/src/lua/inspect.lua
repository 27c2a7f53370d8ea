-- inspect: the live grant of one lease.
-- KEYS[1]  the lease record
-- Replies held(record), {'free'}, or {'corrupt', what is wrong}.
return inspect_one(KEYS[1])
