-- wrk script: a small non-streamed chat completion. BENCH_KEY and BENCH_MODEL
-- come from the environment; BENCH_STREAM=1 asks for a stream.
local key = os.getenv("BENCH_KEY") or "none"
local model = os.getenv("BENCH_MODEL") or "mock-model"
local stream = os.getenv("BENCH_STREAM") == "1"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello"}]'
  .. (stream and ',"stream":true' or '') .. '}'

-- Counted in done() from wrk's summary, which sums every thread's: a counter
-- kept in response() lives in each thread's own Lua state, and done() runs in
-- another, where it would always read 0. errors: sockets and HTTP statuses
-- over 399 together; http_errors: the statuses alone.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.1f p50_ms=%.3f p99_ms=%.3f requests=%d errors=%d http_errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, e.status + e.connect + e.read + e.write + e.timeout, e.status))
end
