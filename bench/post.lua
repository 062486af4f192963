-- wrk script: 1 KiB JSON POSTs, responses counted by status class.
--
-- BENCH_MAX_REQUESTS (optional): each thread stops after that many responses (run wrk with -t1
-- so it is the total). At the end one line is printed for bench/run.py to parse:
--   BENCH_RESULT {"requests": ..., "non2xx": ..., ...}

local body_size = 1024
local head = '{"event":"bench.load","source":"wrk","pad":"'
local tail = '"}'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = head .. string.rep("x", body_size - #head - #tail) .. tail

local max_requests = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Globals of each thread's state, read back in done() through thread:get().
responses = 0
status_2xx = 0
status_4xx = 0
status_5xx = 0
status_other = 0

function response(status, headers, body)
  responses = responses + 1
  if status >= 200 and status < 300 then
    status_2xx = status_2xx + 1
  elseif status >= 400 and status < 500 then
    status_4xx = status_4xx + 1
  elseif status >= 500 then
    status_5xx = status_5xx + 1
  else
    status_other = status_other + 1
  end
  if max_requests and responses >= max_requests then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total = { responses = 0, status_2xx = 0, status_4xx = 0, status_5xx = 0, status_other = 0 }
  for _, thread in ipairs(threads) do
    for name, _ in pairs(total) do
      total[name] = total[name] + (thread:get(name) or 0)
    end
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "responses": %d, '
      .. '"status_2xx": %d, "status_4xx": %d, "status_5xx": %d, "status_other": %d, '
      .. '"non2xx": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"timeouts": %d, "latency_p50_us": %d, "latency_p99_us": %d, "latency_max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, total.responses,
    total.status_2xx, total.status_4xx, total.status_5xx, total.status_other,
    total.responses - total.status_2xx, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max
  ))
end
