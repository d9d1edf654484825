-- wrk script for bench/primary_login.py: POST card logins with a random seeded card number.
--   wrk -t2 -c32 -d10s --latency -s bench/login.lua http://HOST:PORT/api/device/v1/login -- TOKEN NCARDS
-- Cards are "C000001" .. "C<NCARDS>". setup() and done() are bench/bench_json.lua's: at the end it
-- prints one line "BENCH-JSON {...}" with exact counts and latency percentiles (microseconds) for the
-- driver to parse.

-- Next to this file: wrk loads the script by the path given to -s, which is also this chunk's source.
local here = debug.getinfo(1, "S").source:match("^@(.*/)") or ""
dofile(here .. "bench_json.lua")

function init(args)
  token = args[1]
  ncards = tonumber(args[2])
  math.randomseed(id * 7919 + os.time())
  wrk.method = "POST"
end

function request()
  local body = string.format('{"card_number": "C%06d"}', math.random(1, ncards))
  -- A fresh header table each time: wrk.format caches Content-Length in the table it is given.
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
  return wrk.format("POST", nil, headers, body)
end
