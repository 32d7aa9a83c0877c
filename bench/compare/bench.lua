-- wrk script for bench/compare.sh.
-- WRK_PATH: request target (absolute-form "http://host:port/1k" for forward proxies)
-- WRK_HOST: Host header;  WRK_CLOSE=1: send "Connection: close" (new connection per request)
-- done(): one machine-readable RESULT line (latencies in microseconds).
local p = os.getenv("WRK_PATH")
if p and p ~= "" then wrk.path = p end
local h = os.getenv("WRK_HOST")
if h and h ~= "" then wrk.headers["Host"] = h end
if os.getenv("WRK_CLOSE") == "1" then wrk.headers["Connection"] = "close" end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
