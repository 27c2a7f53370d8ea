-- claim and reclaim of one lease.
-- KEYS[1]  the lease record   KEYS[2]  the namespace's token floor
-- ARGV[1]  holder id          ARGV[2]  incarnation
-- ARGV[3]  TTL in ms          ARGV[4]  the restart quarantine in ms (0: off)
-- ARGV[5..7]  reclaim only: the observed grant's id, incarnation and token
-- Replies as claim_one in the prelude.

-- One read of both keys. MGET answers nil for a key of another type, as
-- for an absent one: a corrupt record is replaced either way, and a floor
-- of another type counts as missing.
local values = redis.call('MGET', KEYS[1], KEYS[2])
local f = read_floor(values[2])
local reply = claim_one(KEYS[1], values[1], f, ARGV[4],
  ARGV[1], ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7])
if f.now then
  redis.call('SET', KEYS[2], fmt(f.floor))
end
return reply
