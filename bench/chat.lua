-- wrk script for bench/run.sh: POSTs an OpenAI chat completion request (the body comes from a file
-- written by bench/body.py, ~1 KB) and prints one machine-readable result line from done().
--
-- Arguments (after wrk's `--`):  body=PATH  [stream=0|1]  [delay_ms=D]  [auth_file=PATH]
--   body=PATH   the request body (with or without "stream": true; stream=1 only sets Accept)
--   auth_file=PATH  sends `Authorization: Bearer <first line of the file>` (an API key; read from a
--               file so that it does not appear in the process list)
--   delay_ms=D  pacing, only when the environment has BENCH_PACED=1 (wrk decides whether a script
--               paces by whether it defines delay(), before init() runs): each connection waits D ms
--               (mean) after a response before it sends the next request. wrk's timers have 1 ms
--               resolution, so a fractional D is dithered between floor(D) and floor(D)+1 with the
--               right probability. This approximates a fixed request rate (wrk2, which holds a real
--               constant rate, is not packaged in Debian) with a closed loop: latency is measured
--               from the moment a request is written, and a stall lowers the offered rate instead
--               of queueing requests behind it (coordinated omission), so tail latencies are
--               optimistic. run.sh uses it well below saturation, where that effect is small.
--
-- Output, one line on stdout (parsed by run.sh):
--   BENCH {"requests":N,"duration_us":..,"rps":..,"bytes":..,"p50_us":..,"p90_us":..,"p99_us":..,
--          "p999_us":..,"max_us":..,"mean_us":..,"errors":{"connect":..,"read":..,"write":..,
--          "status":..,"timeout":..}}
-- "status" counts answers that were not 2xx/3xx; run.sh refuses a run with any error.

local delay_ms = 0

function init(args)
  local path, stream, auth
  for _, a in ipairs(args) do
    local k, v = a:match("^([%w_]+)=(.*)$")
    if k == "body" then path = v
    elseif k == "stream" then stream = (v == "1")
    elseif k == "auth_file" then auth = v
    elseif k == "delay_ms" then delay_ms = tonumber(v) or error("chat.lua: bad delay_ms '" .. v .. "'")
    else error("chat.lua: unknown argument '" .. a .. "'") end
  end
  if not path then error("chat.lua: body=PATH is required") end
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Accept"] = stream and "text/event-stream" or "application/json"
  if auth then
    local a = assert(io.open(auth, "rb"))
    local key = a:read("*l")
    a:close()
    if not key or key == "" then error("chat.lua: " .. auth .. " holds no key") end
    wrk.headers["Authorization"] = "Bearer " .. key
  end
  -- Each thread has its own Lua state; seed them differently so dithered delays are not in step.
  math.randomseed(os.time() * 1000 + (tonumber(tostring({}):match("0x(%x+)") or "0", 16) % 1000))
end

if os.getenv("BENCH_PACED") == "1" then
  function delay()
    local base = math.floor(delay_ms)
    if math.random() < delay_ms - base then return base + 1 end
    return base
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"rps":%.1f,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6), summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
