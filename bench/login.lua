-- wrk script for bench/primary_login.py: POST card logins with a random seeded card number.
--   wrk -t2 -c32 -d10s --latency -s bench/login.lua http://HOST:PORT/api/device/v1/login -- TOKEN NCARDS
-- Cards are "C000001" .. "C<NCARDS>". At the end it prints one line "BENCH-JSON {...}" with exact
-- counts and latency percentiles (microseconds) for the driver to parse.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

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

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH-JSON {"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
