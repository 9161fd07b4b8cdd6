-- wrk script of the api-single benchmark scenario (tools/bench_api.py): POST /v1/messages, one urgent
-- SMS per request, each request with its own Idempotency-Key and recipient, as an app sending OTPs.
-- Environment: BENCH_API_KEY (X-API-Key), BENCH_NONCE (makes keys unique across runs), BENCH_RATE
-- (requests/s of the whole run, spread over BENCH_THREADS threads; 0 = as fast as answers come).
-- At the end it prints one line "WRK_JSON {...}" with the counts and latency percentiles (µs).
--
-- A fixed rate: wrk has no such mode, so each thread keeps a schedule of its own (one request every
-- threads / rate seconds, read from CLOCK_MONOTONIC through LuaJIT's FFI) and delay() holds a
-- connection's next request until the next free slot. A thread behind its schedule sends at once,
-- so the rate is kept while connections are free; latency is measured from each request's send.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local timespec = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) * 1000 + tonumber(timespec.tv_nsec) / 1e6
end

local api_key = os.getenv("BENCH_API_KEY") or ""
local nonce = os.getenv("BENCH_NONCE") or "wrk"
local rate = tonumber(os.getenv("BENCH_RATE") or "0")
local thread_count = tonumber(os.getenv("BENCH_THREADS") or "1")
local threads = 0
local counter = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local n = (thread_id or 0) * 10000000 + counter
  local body = string.format(
    '{"channel":"sms","recipient":"+1415%07d","priority":0,"payload":{"body":"Your code is %06d"}}',
    n % 10000000, n % 1000000)
  local headers = {
    ["Content-Type"] = "application/json",
    ["X-API-Key"] = api_key,
    ["Idempotency-Key"] = string.format("%s-%d-%d", nonce, thread_id or 0, counter),
  }
  return wrk.format("POST", "/v1/messages", headers, body)
end

if rate > 0 then
  local interval_ms = 1000 * thread_count / rate
  local next_at = nil
  function delay()
    local now = now_ms()
    if next_at == nil then
      next_at = now
    end
    local wait = next_at - now
    next_at = next_at + interval_ms
    if wait < 0 then
      return 0
    end
    return math.floor(wait + 0.5)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
