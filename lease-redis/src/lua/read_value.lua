-- read value: a marker's value (marker get) or a guarded write's (guarded read).
-- KEYS[1]  the marker or target
-- Replies {'value', bytes}, {'absent'} or {'corrupt', what is wrong}.
return read_one(KEYS[1])
