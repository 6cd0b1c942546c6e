-- A Sky Island example: `stats.summary({3, 1, 2})` calls this module's function; a
-- table is answered as JSON (keys sorted; 2.0 prints as 2, as in JavaScript).
local M = {}

function M.summary(xs)
  local min, max, total = math.huge, -math.huge, 0
  for _, x in ipairs(xs) do
    if x < min then min = x end
    if x > max then max = x end
    total = total + x
  end
  return { min = min, max = max, mean = total / #xs }
end

return M
