-- release_many: a batch of releases, each as release.lua would alone.
-- KEYS[i]  the i-th lease record
-- ARGV[1]  the channel
-- ARGV[2i], ARGV[2i + 1]  the i-th fence's record (see owns in the
--   prelude) and its lease key
-- Replies one integer per release, in order: 1 when released, 0 when there
-- was nothing to release. The released lease keys are published in one
-- message, newline-separated (lease keys hold no control characters).
local values = redis.call('MGET', unpack(KEYS))
local done, released, messages, replies = {}, {}, {}, {}
for i = 1, #KEYS do
  local key = KEYS[i]
  -- MGET answers nil for a key of another type: never a fence's record.
  if owns(values[i], ARGV[2 * i]) and not done[key] then
    done[key] = true
    released[#released + 1] = key
    messages[#messages + 1] = ARGV[2 * i + 1]
    replies[i] = 1
  else
    replies[i] = 0
  end
end
if #released > 0 then
  redis.call('DEL', unpack(released))
  redis.call('PUBLISH', ARGV[1], table.concat(messages, '\n'))
end
return replies
