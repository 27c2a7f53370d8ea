-- Prepended to every script of this crate.
--
-- A lease record is a hash: h = holder id, i = incarnation, t = fencing
-- token, e = end of the grant in server microseconds (0 once released).
-- The record outlives its grant by the retention time (PEXPIRE), so the
-- next token can be derived from the last one; after that, tokens come from
-- the server clock, which has moved past every earlier token.

local function now_us()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- Integers up to 2^53 print exactly this way; tostring would use %.14g.
local function fmt(n)
  return string.format('%.0f', n)
end

-- nil when absent, a string saying what is wrong when corrupt, else the record.
local function read_record(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    return nil
  end
  if kind ~= 'hash' then
    return 'the key holds a ' .. kind .. ', not a lease record'
  end
  local f = redis.call('HMGET', key, 'h', 'i', 't', 'e')
  local token, ends = tonumber(f[3]), tonumber(f[4])
  if not f[1] or not f[2] or not token or not ends or token < 1 then
    return 'the hash lacks a holder, token or end'
  end
  return { holder = f[1], incarnation = f[2], token = token, ends = ends }
end

local function is_live(record, now)
  return type(record) == 'table' and record.ends > now
end

local function is_fence(record, id, incarnation, token)
  return record.holder == id and record.incarnation == incarnation and fmt(record.token) == token
end

-- The live grant as a reply: {'held', id, incarnation, token, microseconds left}.
local function held(record, now)
  return { 'held', record.holder, record.incarnation, fmt(record.token), fmt(record.ends - now) }
end

-- Refuses a key that holds something other than a plain string.
local function string_kind(key)
  local kind = redis.call('TYPE', key)['ok']
  return kind == 'none' or kind == 'string', kind
end

