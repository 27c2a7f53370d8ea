-- claim: a batch of claims and reclaims, each decided as if it ran alone,
-- in order (a later one on the same key sees what an earlier one did).
-- KEYS[1]  the namespace's token floor   KEYS[1 + i]  the i-th lease record
-- ARGV[1]  the restart quarantine in ms (0: off)
-- ARGV[6i - 4 .. 6i + 1]  the i-th claim: holder id, incarnation, TTL in
--   ms, and for a reclaim the observed grant's id, incarnation and token
--   ('' for a plain claim)
-- Replies one reply per claim, in order: {'acquired', token, '1'} for a
-- fresh grant, {'acquired', token, '0'} for the holder's own live grant
-- refreshed, held(record) when busy, or quarantined(ms left) when no fresh
-- grant may be made yet.

-- One read of every key. MGET answers nil for a key of another type, as
-- for an absent one: a corrupt record is replaced either way, and a floor
-- of another type counts as missing.
local values = redis.call('MGET', unpack(KEYS))
local floor_value = values[1]
local floor = tonumber(floor_value)
if not floor or floor >= 2 ^ 53 then
  floor = 0 -- a corrupt floor: no token that high was handed out
end

-- What this batch has done so far: per key, the record it left (false:
-- none).
local records, replies = {}, {}
local now, left

for i = 1, #KEYS - 1 do
  local key, a = KEYS[i + 1], 6 * i - 4
  local holder, incarnation, ttl = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local record = records[key]
  if record == nil then
    record = values[i + 1] and parse_record(key, values[i + 1]) or false
  end
  if is_live(record) and record.holder == holder and record.incarnation == incarnation then
    record.left = tonumber(ttl)
    redis.call('PEXPIRE', key, ttl)
    replies[i] = { 'acquired', record.token_text, '0' }
  elseif is_live(record) and (ARGV[a + 3] == '' or not is_fence(record, ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])) then
    replies[i] = held(record)
  else
    -- Free, corrupt, or the observed grant: a fresh grant, above the
    -- floor, the record replaced and the clock. The floor orders tokens
    -- whatever the clock does; the clock orders them after the floor was
    -- lost (a restart without persistence, a failover that lost the last
    -- writes).
    if left == nil then
      left = quarantine_left(floor_value, ARGV[1]) or false
    end
    if left then
      replies[i] = quarantined(left)
    else
      now = now or now_us()
      local last = 0
      if type(record) == 'table' then
        last = record.token
      end
      floor = math.max(last + 1, floor + 1, now)
      local token = fmt(floor)
      record = { holder = holder, incarnation = incarnation, token = floor, token_text = token, left = tonumber(ttl) }
      -- SET replaces whatever the key held, a corrupt value of any type included.
      redis.call('SET', key, 'v3\n' .. holder .. '\n' .. incarnation .. '\n' .. token, 'PX', ttl)
      replies[i] = { 'acquired', token, '1' }
    end
  end
  records[key] = record
end

if now then
  redis.call('SET', KEYS[1], fmt(floor))
end
return replies
