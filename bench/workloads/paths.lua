-- wrk script of the workloads: draws the path of every request.
--   wrk ... -s paths.lua -- zipf <items> <seed>       /items/<rank>, rank ~ Zipf(s = 1) over 1..items
--   wrk ... -s paths.lua -- distinct <base> <seed>    /items/<base + 1>, /items/<base + 2>, ...
-- and prints one JSON line of results when done (latencies in microseconds).
local mode, n, base
local cdf = {}
local counter = 0

function init(args)
  mode = args[1]
  math.randomseed(tonumber(args[3]) or 1)
  if mode == "zipf" then
    n = tonumber(args[2])
    local sum = 0
    for k = 1, n do
      sum = sum + 1 / k
      cdf[k] = sum
    end
    for k = 1, n do cdf[k] = cdf[k] / sum end
  else
    base = tonumber(args[2])
  end
end

local function zipf()
  local r = math.random()
  local lo, hi = 1, n
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < r then lo = mid + 1 else hi = mid end
  end
  return lo
end

function request()
  local id
  if mode == "zipf" then
    id = zipf()
  else
    counter = counter + 1
    id = base + counter
  end
  return wrk.format("GET", "/items/" .. string.format("%d", id))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration":%d,"bytes":%d,"p50":%d,"p99":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
