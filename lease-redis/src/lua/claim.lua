-- claim and reclaim of one lease.
-- KEYS[1]  the lease record
-- ARGV[1]  holder id          ARGV[2]  incarnation
-- ARGV[3]  TTL in ms          ARGV[4]  retention after the grant ends, in ms
-- ARGV[5..7]  reclaim only: the observed grant's id, incarnation and token
-- Replies {'acquired', token, '1'} for a fresh grant, {'acquired', token, '0'}
-- for the holder's own live grant refreshed, or held(record) when busy.
local now = now_us()
local record = read_record(KEYS[1])
local ends = now + tonumber(ARGV[3]) * 1000
local keep = tonumber(ARGV[3]) + tonumber(ARGV[4])

if is_live(record, now) then
  if record.holder == ARGV[1] and record.incarnation == ARGV[2] then
    write_record(KEYS[1], record.holder, record.incarnation, record.token_text, fmt(ends), keep)
    return { 'acquired', record.token_text, '0' }
  end
  if ARGV[5] == nil or not is_fence(record, ARGV[5], ARGV[6], ARGV[7]) then
    return held(record, now)
  end
end

-- Free, ended, corrupt, or the observed grant: a fresh grant. Scripts on one
-- key run well over a microsecond apart, so the clock alone already orders
-- tokens; the last token keeps them ordered if the clock is stepped back
-- within the retention time.
local last = 0
if type(record) == 'table' then
  last = record.token
end
local token = fmt(math.max(last + 1, now))
-- SET replaces whatever the key held, a corrupt value of any type included.
write_record(KEYS[1], ARGV[1], ARGV[2], token, fmt(ends), keep)
return { 'acquired', token, '1' }
