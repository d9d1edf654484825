-- wrk script for bench/wan_outage.py: POST copy usage (one page, mono) to one device session, each
-- request with a fresh UUIDv4-shaped txn_id made with math.random.
--   wrk -t2 -c32 -d10s --latency -s bench/usage.lua http://HOST:PORT/api/device/v1/sessions/SESSION/usage -- TOKEN
-- At the end it prints one line "BENCH-JSON {...}" (same fields as bench/login.lua).

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
end

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
