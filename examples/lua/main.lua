-- A Sky Island example: a bare name calls a function of the table main.lua returns.
local M = {}

function M.greet(name)
  return "Hello, " .. name .. "!"
end

return M
