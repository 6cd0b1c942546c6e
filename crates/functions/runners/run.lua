-- Sky Island's Lua runner: calls one function of the package with the arguments the
-- server parsed, and prints what it returns. arg names the package and the module (JSON);
-- the module is loaded first, then the call is read from stdin as JSON data, never as
-- source: a pre-started runner waits there, its package loaded, for its one call. Exit 87: no such module or name; 88: the package does not load (a syntax
-- error); an error: its traceback and exit 1.
local pkg, module_text = arg[1], arg[2]

local function fail(code, message)
  io.stdout:flush()
  io.stderr:write("skyisland-runner: ", message, "\n")
  os.exit(code)
end

-- A JSON decoder for what the server writes (objects, arrays, strings, numbers, literals).
-- Arrays' lengths (trailing nils count) go to `lengths`.
local function decode(text, lengths)
  local pos = 1
  local value
  local function space() pos = text:find("[^ \t\r\n]", pos) or #text + 1 end
  local function str()
    local out, i = {}, pos + 1
    while true do
      local c = text:sub(i, i)
      if c == '"' then pos = i + 1; return table.concat(out) end
      if c == "\\" then
        local e = text:sub(i + 1, i + 1)
        if e == "u" then
          local code = tonumber(text:sub(i + 2, i + 5), 16)
          i = i + 6
          if code >= 0xD800 and code < 0xDC00 then
            local low = tonumber(text:sub(i + 2, i + 5), 16)
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            i = i + 6
          end
          out[#out + 1] = utf8.char(code)
        else
          local map = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
          out[#out + 1] = map[e] or e
          i = i + 2
        end
      else
        local j = text:find('["\\]', i)
        out[#out + 1] = text:sub(i, j - 1)
        i = j
      end
    end
  end
  function value()
    space()
    local c = text:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1; space()
      if text:sub(pos, pos) == "}" then pos = pos + 1; return t end
      while true do
        space()
        local k = str(); space()
        pos = pos + 1 -- ':'
        t[k] = value(); space()
        local sep = text:sub(pos, pos); pos = pos + 1
        if sep == "}" then return t end
      end
    elseif c == "[" then
      local t, n = {}, 0
      pos = pos + 1; space()
      if text:sub(pos, pos) == "]" then pos = pos + 1; lengths[t] = 0; return t end
      while true do
        n = n + 1
        t[n] = value(); space()
        local sep = text:sub(pos, pos); pos = pos + 1
        if sep == "]" then lengths[t] = n; return t end
      end
    elseif c == '"' then return str()
    elseif text:sub(pos, pos + 3) == "true" then pos = pos + 4; return true
    elseif text:sub(pos, pos + 4) == "false" then pos = pos + 5; return false
    elseif text:sub(pos, pos + 3) == "null" then pos = pos + 4; return nil
    else
      local num = text:match("^-?[%d.eE+-]+", pos)
      pos = pos + #num
      -- With a point or an exponent it was a float, and stays one.
      if num:find("[.eE]") then return tonumber(num) + 0.0 end
      return math.tointeger(tonumber(num))
    end
  end
  return value()
end

local lengths = setmetatable({}, { __mode = "k" })
local module_name = decode(module_text, lengths)
-- The call: all of stdin, read once.
local spec
local function call()
  if spec == nil then spec = decode(io.stdin:read("a"), lengths) end
  return spec
end

package.path = pkg .. "/?.lua;" .. pkg .. "/?/init.lua;" .. pkg .. "/lua_modules/share/lua/5.4/?.lua;"
  .. pkg .. "/lua_modules/share/lua/5.4/?/init.lua"
package.cpath = ""

if module_name == nil then
  -- A bare name: main.lua, then init.lua.
  for _, candidate in ipairs({ "main", "init" }) do
    local f = io.open(pkg .. "/" .. candidate .. ".lua")
    if f then f:close(); module_name = candidate; break end
  end
  if module_name == nil then
    fail(87, "a bare name needs main.lua or init.lua in the package; name the module: module." .. call().name .. "(...)")
  end
end

local path = package.searchpath(module_name, package.path)
if not path then fail(87, "no module " .. module_name .. " in the package") end
local chunk, load_error = loadfile(path, "t")
if not chunk then fail(88, load_error:gsub("^" .. pkg:gsub("%p", "%%%0") .. "/", "")) end

local function traceback(e)
  return debug.traceback(tostring(e), 2)
end

local ok, module = xpcall(chunk, traceback, module_name, path)
if not ok then
  io.stderr:write(module, "\n")
  os.exit(1)
end
package.loaded[module_name] = module == nil and true or module
local name, args = call().name, call().args
local nargs = lengths[args]
local fn
if type(module) == "table" then fn = module[name] end
if fn == nil then fn = _G[name] end
if type(fn) ~= "function" then fail(87, "module " .. module_name .. " has no function " .. name) end

local results = table.pack(xpcall(fn, traceback, table.unpack(args, 1, nargs)))
if not results[1] then
  io.stdout:flush()
  io.stderr:write(tostring(results[2]), "\n")
  os.exit(1)
end
local result = results[2]

local function encode(v, out, depth)
  local t = type(v)
  if depth > 64 then error("the return value nests too deeply") end
  if v == nil then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then out[#out + 1] = "null"
    elseif math.type(v) == "integer" then out[#out + 1] = string.format("%d", v)
    else
      -- The shortest of %.14g and %.17g that reads back as the same number (0.1, not
      -- 0.10000000000000001).
      local short = string.format("%.14g", v)
      out[#out + 1] = tonumber(short) == v and short or string.format("%.17g", v)
    end
  elseif t == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', function(c)
      local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
      return map[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  elseif t == "table" then
    local n, count = #v, 0
    for _ in pairs(v) do count = count + 1 end
    if count == n and n > 0 then
      out[#out + 1] = "["
      for i = 1, n do
        if i > 1 then out[#out + 1] = "," end
        encode(v[i], out, depth + 1)
      end
      out[#out + 1] = "]"
    else
      -- Keys sorted: Lua's own order of a table's keys changes from run to run (its
      -- string hashes are seeded per state), and an answer must not.
      local keys, by_name = {}, {}
      for k, item in pairs(v) do
        local name = tostring(k)
        keys[#keys + 1] = name
        by_name[name] = item
      end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, name in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        encode(name, out, depth + 1)
        out[#out + 1] = ":"
        encode(by_name[name], out, depth + 1)
      end
      out[#out + 1] = "}"
    end
  else
    encode(tostring(v), out, depth + 1)
  end
end

if result ~= nil then
  if type(result) == "string" then
    io.stdout:write(result)
  else
    local out = {}
    encode(result, out, 0)
    io.stdout:write(table.concat(out))
  end
end
io.stdout:flush()
