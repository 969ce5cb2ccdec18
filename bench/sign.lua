-- wrk script: POSTs one signing request on every connection and prints the run's figures as one
-- JSON line (latencies in microseconds), which bench/http.ts reads.
-- The request comes from the environment: KEYCELL_BENCH_PATH, KEYCELL_BENCH_TOKEN, KEYCELL_BENCH_BODY.
wrk.method = "POST"
wrk.path = os.getenv("KEYCELL_BENCH_PATH")
wrk.body = os.getenv("KEYCELL_BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KEYCELL_BENCH_TOKEN")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'KEYCELL_WRK {"requests":%d,"durationUs":%d,"non2xx":%d,"socketErrors":%d,' ..
    '"p50":%d,"p99":%d,"p999":%d,"max":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
