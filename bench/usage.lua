-- wrk script for bench/wan_outage.py: POST copy usage (one page, mono) to one device session, each
-- request with a fresh UUIDv4-shaped txn_id made with math.random.
--   wrk -t2 -c32 -d10s --latency -s bench/usage.lua http://HOST:PORT/api/device/v1/sessions/SESSION/usage -- TOKEN
-- setup() and done() are bench/bench_json.lua's, as in bench/login.lua: at the end it prints one line
-- "BENCH-JSON {...}".

-- Next to this file: wrk loads the script by the path given to -s, which is also this chunk's source.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or ""
dofile(here .. "bench_json.lua")

function init(args)
  token = args[1]
  math.randomseed(id * 104729 + os.time() * 31 + math.floor(os.clock() * 1e6))
  wrk.method = "POST"
end

local function uuid4()
  return string.format("%04x%04x-%04x-4%03x-%x%03x-%04x%04x%04x",
    math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xffff),
    math.random(0, 0xfff), math.random(8, 11), math.random(0, 0xfff),
    math.random(0, 0xffff), math.random(0, 0xffff), math.random(0, 0xffff))
end

function request()
  local body = string.format('{"txn_id": "%s", "kind": "copy", "pages": 1, "color": false}', uuid4())
  -- A fresh header table each time: wrk.format caches Content-Length in the table it is given.
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
  return wrk.format("POST", nil, headers, body)
end
