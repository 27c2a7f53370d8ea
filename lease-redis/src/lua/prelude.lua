-- Functions for the scripts of this crate: each script gets those it
-- calls (src/scripts.rs), so a paragraph defines one function.
--
-- A lease record is one string: 'v3', holder id, incarnation and fencing
-- token, joined by newlines (holder parts hold no control characters);
-- once renewed, a fifth line holds the stamp of the last renewal applied
-- (ORIGIN:SEQ, lease_core::Stamp). Redis drops the key when the grant
-- ends, so a record exists exactly while its grant is live: the server's
-- own expiry clock decides, and a renewal is a `GET` that compares text
-- and a `SET ... PX`. A release deletes the record.
--
-- Each namespace has one token floor key (`{ns}:floor`) holding the
-- highest token handed out in it; a fresh grant's token is above the
-- floor, the key's last record and the server clock in µs. The floor never
-- expires: one small key per namespace, not per lease key.

local function now_us()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- Integers up to 2^53 print exactly this way; tostring would use %.14g.
local function fmt(n)
  return string.format('%d', n)
end

-- The string at key: its value or false when absent; or nil and what is
-- wrong when the key holds another type.
local function get_string(key)
  local value = redis.pcall('GET', key)
  if type(value) == 'table' and value.err then
    return nil, 'the key holds a ' .. redis.call('TYPE', key)['ok'] .. ', not a string'
  end
  return value
end

-- The live record that `value`, the string at key, holds: holder,
-- incarnation, token (also as the text it was stored as, `token_text`, so
-- it is compared, replied and rewritten without formatting a number again)
-- and `left`, the ms until the grant ends; or a string saying what is
-- wrong with it.
local function parse_record(key, value)
  local holder, incarnation, token_text =
    string.match(value, '^v3\n([^\n]+)\n([^\n]+)\n(%d+)$')
  if not holder then
    holder, incarnation, token_text =
      string.match(value, '^v3\n([^\n]+)\n([^\n]+)\n(%d+)\n%x+:%d+$')
  end
  local token = tonumber(token_text)
  if not holder or not token or token < 1 then
    return 'not a lease record'
  end
  local left = redis.call('PTTL', key)
  if left < 0 then
    return 'a lease record without an expiry'
  end
  return { holder = holder, incarnation = incarnation, token = token, token_text = token_text, left = left }
end

-- nil when absent (the grant ended), a string saying what is wrong when
-- corrupt, else the live record (see parse_record).
local function read_record(key)
  local value, wrong = get_string(key)
  if wrong then
    return wrong
  end
  if not value then
    return nil
  end
  return parse_record(key, value)
end

local function is_live(record)
  return type(record) == 'table'
end

local function is_fence(record, id, incarnation, token)
  return record.holder == id and record.incarnation == incarnation and record.token_text == token
end

-- The live grant as a reply: {'held', id, incarnation, token, microseconds left}.
local function held(record)
  return { 'held', record.holder, record.incarnation, record.token_text, fmt(record.left * 1000) }
end

-- Refuses a key that holds something other than a plain string.
local function string_kind(key)
  local kind = redis.call('TYPE', key)['ok']
  return kind == 'none' or kind == 'string', kind
end

-- Whether `value`, what a GET or MGET read of a record, is `own`, the
-- fence's record as the client writes it, or `own` followed by a
-- renewal's stamp (once renewed): then the fence holds the live grant.
-- Nothing is parsed.
local function owns(value, own)
  return value == own or (type(value) == 'string' and string.sub(value, 1, #own + 1) == own .. '\n')
end

-- The value at key when the fence `own` holds it (see owns), else false.
local function own_value(key, own)
  local value = redis.pcall('GET', key)
  if owns(value, own) then
    return value
  end
  return false
end

local function is_own(key, own)
  return own_value(key, own) ~= false
end

-- Sets the fence's live grant to end ttl_ms from now, and keeps `stamp`,
-- the renewal's place in its store's order, with it: 1. A renewal sent
-- before one of the same store already applied (same origin, lower SEQ)
-- changes nothing: {'kept', µs left}. held(record) / 0 (free) when the
-- fence is not the live grant.
local function renew_one(key, own, ttl_ms, stamp)
  local value = own_value(key, own)
  if value then
    -- ORIGIN is 16 hex digits: the stamp's first 17 bytes are 'ORIGIN:'.
    local seq = tonumber(string.sub(stamp, 18))
    if string.byte(stamp, 17) ~= 58 or not seq then
      return redis.error_reply('renew: the stamp ' .. stamp .. ' is not ORIGIN:SEQ')
    end
    -- The applied stamp follows the fence's record: compared by slices,
    -- no pattern, as this runs for every renewal of a batch.
    local at = #own + 2
    if string.sub(value, at, at + 16) == string.sub(stamp, 1, 17)
      and seq < (tonumber(string.sub(value, at + 17)) or -1) then
      return { 'kept', fmt(redis.call('PTTL', key) * 1000) }
    end
    redis.call('SET', key, own .. '\n' .. stamp, 'PX', ttl_ms)
    return 1
  end
  local record = read_record(key)
  if is_live(record) then
    return held(record)
  end
  return 0
end

-- The ms left of the namespace's restart quarantine, or nil when it is
-- not in force. In force while the token floor is missing (`floor`, what
-- GET read of it, is false: the namespace's data is gone, or it was never
-- used) and the server has been up for less than `quarantine_ms`: any
-- grant made before a restart that lost the data ends within that long of
-- the restart. 0 turns it off.
local function quarantine_left(floor, quarantine_ms)
  quarantine_ms = tonumber(quarantine_ms) or 0
  if quarantine_ms <= 0 or floor then
    return nil
  end
  local info = redis.call('INFO', 'server')
  -- The difference of two whole-second clock readings, so up to a second
  -- more than the time since the start: less a second, the quarantine
  -- errs long (by up to a second), never short.
  local up_ms = (tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) - 1) * 1000
  if up_ms >= quarantine_ms then
    return nil
  end
  return quarantine_ms - up_ms
end

-- The quarantine as a busy reply: {'quarantined', microseconds left}.
local function quarantined(left_ms)
  return { 'quarantined', fmt(left_ms * 1000) }
end

-- The namespace's token floor as a claim script reads it: `value`, what
-- MGET read (false when missing), and `floor`, the highest token handed
-- out as a number (0 when missing or corrupt: no token that high was
-- handed out). A claim sets `now` when it made a fresh grant, and the
-- script then writes `floor` back.
local function read_floor(value)
  local floor = tonumber(value)
  if not floor or floor >= 2 ^ 53 then
    floor = 0
  end
  return { value = value, floor = floor }
end

-- One claim of the key (`value`, what MGET read of it: false when absent),
-- for `holder`#`incarnation`, `ttl` ms, taking over the observed grant
-- `o_id`, `o_inc`, `o_token` if given (a reclaim). Writes what it grants
-- and gives its reply and the value the key holds after it. A claim's
-- reply is one line per field in one string, which costs a batch less to
-- return than a table per claim: 'acquired\nTOKEN\n1' for a fresh grant,
-- 'acquired\nTOKEN\n0' for the holder's own live grant refreshed,
-- held(record) when busy, quarantined(ms left) when no fresh grant may
-- be made yet, those two joined into lines (busy claims are the rare
-- path; the fields are listed once, in held and quarantined). `f` is the floor (read_floor);
-- `quarantine_ms` as quarantine_left takes it.
local function claim_one(key, value, f, quarantine_ms, holder, incarnation, ttl, o_id, o_inc, o_token)
  local record = value and parse_record(key, value)
  if is_live(record) then
    if record.holder == holder and record.incarnation == incarnation then
      -- Later, never earlier (GT): this claim may be a retry's original,
      -- landing after a longer renewal.
      redis.call('PEXPIRE', key, ttl, 'GT')
      return 'acquired\n' .. record.token_text .. '\n0', value
    end
    if not o_id or not is_fence(record, o_id, o_inc, o_token) then
      return table.concat(held(record), '\n'), value
    end
  end
  -- Free, corrupt, or the observed grant: a fresh grant, above the floor,
  -- the record replaced and the clock. The floor orders tokens whatever
  -- the clock does; the clock orders them after the floor was lost (a
  -- restart without persistence, a failover that lost the last writes).
  if f.left == nil then
    f.left = quarantine_left(f.value, quarantine_ms) or false
  end
  if f.left then
    return table.concat(quarantined(f.left), '\n'), value
  end
  f.now = f.now or now_us()
  local last = 0
  if type(record) == 'table' then
    last = record.token
  end
  f.floor = math.max(last + 1, f.floor + 1, f.now)
  local token = fmt(f.floor)
  -- SET replaces whatever the key held, a corrupt value of any type included.
  local written = 'v3\n' .. holder .. '\n' .. incarnation .. '\n' .. token
  redis.call('SET', key, written, 'PX', ttl)
  return 'acquired\n' .. token .. '\n1', written
end

-- What inspect replies for the record at key: held(record), {'free'} or
-- {'corrupt', what is wrong}; for a free key under a restart quarantine
-- (when `floor_key` is given), quarantined(ms left).
local function inspect_one(key, floor_key, quarantine_ms)
  local record = read_record(key)
  if type(record) == 'string' then
    return { 'corrupt', record }
  end
  if is_live(record) then
    return held(record)
  end
  local left = floor_key and quarantine_left(redis.pcall('GET', floor_key), quarantine_ms)
  if left then
    return quarantined(left)
  end
  return { 'free' }
end

-- What read_value replies for the value at key: {'value', bytes},
-- {'absent'} or {'corrupt', what is wrong}.
local function read_one(key)
  local value, wrong = get_string(key)
  if wrong then
    return { 'corrupt', wrong }
  end
  if not value then
    return { 'absent' }
  end
  return { 'value', value }
end
