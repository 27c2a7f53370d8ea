-- claim and reclaim of one lease.
-- KEYS[1]  the lease record   KEYS[2]  the namespace's token floor
-- ARGV[1]  holder id          ARGV[2]  incarnation
-- ARGV[3]  TTL in ms          ARGV[4]  the restart quarantine in ms (0: off)
-- ARGV[5..7]  reclaim only: the observed grant's id, incarnation and token
-- Replies {'acquired', token, '1'} for a fresh grant, {'acquired', token, '0'}
-- for the holder's own live grant refreshed, held(record) when busy, or
-- quarantined(ms left) when no fresh grant may be made yet.

-- One read of both keys. MGET answers nil for a key of another type, as
-- for an absent one: a corrupt record is replaced either way, and a floor
-- of another type counts as missing.
local values = redis.call('MGET', KEYS[1], KEYS[2])
local record, floor_value = values[1] and parse_record(KEYS[1], values[1]), values[2]

if is_live(record) then
  if record.holder == ARGV[1] and record.incarnation == ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return { 'acquired', record.token_text, '0' }
  end
  if ARGV[5] == nil or not is_fence(record, ARGV[5], ARGV[6], ARGV[7]) then
    return held(record)
  end
end

-- Free, corrupt, or the observed grant: a fresh grant, above the floor,
-- the record replaced and the clock. The floor orders tokens whatever the
-- clock does; the clock orders them after the floor was lost (a restart
-- without persistence, a failover that lost the last writes).
local left = quarantine_left(floor_value, ARGV[4])
if left then
  return quarantined(left)
end
local last = 0
if type(record) == 'table' then
  last = record.token
end
local floor = tonumber(floor_value)
if not floor or floor >= 2 ^ 53 then
  floor = 0 -- a corrupt floor: no token that high was handed out
end
local token = fmt(math.max(last + 1, floor + 1, now_us()))
-- SET replaces whatever the keys held, a corrupt value of any type included.
redis.call('SET', KEYS[1], 'v3\n' .. ARGV[1] .. '\n' .. ARGV[2] .. '\n' .. token, 'PX', ARGV[3])
redis.call('SET', KEYS[2], token)
return { 'acquired', token, '1' }
