-- Shared by bench/login.lua and bench/usage.lua, which load it with dofile() from their own
-- directory: numbers each wrk thread (its `id`, for seeding math.random in init) and, at the end,
-- prints one line "BENCH-JSON {...}" with exact counts and latency percentiles (microseconds) for
-- the Python driver (primary_login.run_wrk) to parse.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
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
