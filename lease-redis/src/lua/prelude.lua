-- Prepended to every script of this crate.
--
-- A lease record is one string: 'v2', holder id, incarnation, fencing token
-- and the end of the grant in server microseconds (0 once released), joined
-- by newlines (holder parts hold no control characters). One GET reads it;
-- one SET ... PX writes it together with its expiry. The record outlives its
-- grant by the retention time, so the next token can be derived from the
-- last one; after that, tokens come from the server clock, which has moved
-- past every earlier token.

local function now_us()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- Integers up to 2^53 print exactly this way; tostring would use %.14g.
local function fmt(n)
  return string.format('%.0f', n)
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

-- nil when absent, a string saying what is wrong when corrupt, else the
-- record. The token stays the text it was stored as (`token_text`), so it
-- is compared, replied and rewritten without formatting a number again.
local function read_record(key)
  local value, wrong = get_string(key)
  if wrong then
    return wrong
  end
  if not value then
    return nil
  end
  local holder, incarnation, token_text, ends =
    string.match(value, '^v2\n([^\n]+)\n([^\n]+)\n(%d+)\n(%d+)$')
  local token = tonumber(token_text)
  ends = tonumber(ends)
  if not holder or not token or not ends or token < 1 then
    return 'not a lease record'
  end
  return { holder = holder, incarnation = incarnation, token = token, token_text = token_text, ends = ends }
end

-- Writes a record that Redis drops keep_ms from now. `token_text` and
-- `ends_text` are decimal text.
local function write_record(key, holder, incarnation, token_text, ends_text, keep_ms)
  redis.call('SET', key,
    'v2\n' .. holder .. '\n' .. incarnation .. '\n' .. token_text .. '\n' .. ends_text,
    'PX', keep_ms)
end

local function is_live(record, now)
  return type(record) == 'table' and record.ends > now
end

local function is_fence(record, id, incarnation, token)
  return record.holder == id and record.incarnation == incarnation and record.token_text == token
end

-- The live grant as a reply: {'held', id, incarnation, token, microseconds left}.
local function held(record, now)
  return { 'held', record.holder, record.incarnation, record.token_text, fmt(record.ends - now) }
end

-- Refuses a key that holds something other than a plain string.
local function string_kind(key)
  local kind = redis.call('TYPE', key)['ok']
  return kind == 'none' or kind == 'string', kind
end

-- The end of the grant in `value` if `value` is the record that starts
-- with `own` — the fence's 'v2', holder id, incarnation and token, each
-- followed by a newline, as the client sends it — else nil. The fence's
-- own record is that text and the end of its grant: compared as text,
-- with nothing parsed.
local function own_ends(value, own)
  if type(value) ~= 'string' or string.sub(value, 1, #own) ~= own then
    return nil
  end
  local ends_text = string.sub(value, #own + 1)
  if not string.find(ends_text, '^%d+$') then
    return nil
  end
  return tonumber(ends_text)
end

-- Extends the live grant whose record starts with `own` (see own_ends) by
-- ttl_ms from now: {'renewed'}, or held(record) / {'free'} when the fence
-- is not the live grant.
local function renew_one(key, own, ttl_ms, retention_ms, now)
  local ends = own_ends(redis.pcall('GET', key), own)
  if ends then
    if ends <= now then
      return { 'free' }
    end
    redis.call('SET', key, own .. fmt(now + ttl_ms * 1000), 'PX', ttl_ms + retention_ms)
    return { 'renewed' }
  end
  local record = read_record(key)
  if not is_live(record, now) then
    return { 'free' }
  end
  return held(record, now)
end

-- What inspect replies for the record at key: held(record), {'free'} or
-- {'corrupt', what is wrong}.
local function inspect_one(key, now)
  local record = read_record(key)
  if type(record) == 'string' then
    return { 'corrupt', record }
  end
  if not is_live(record, now) then
    return { 'free' }
  end
  return held(record, now)
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
