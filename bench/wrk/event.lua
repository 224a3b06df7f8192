-- wrk script: POST /api/event with a unique event id per request (closed loop, max throughput).
-- Arguments after `--`: site_id api_key id_prefix_without_phase(8 hex) phase(int) ids_dir
-- Each thread writes the event ids of 200 answers to <ids_dir>/wrk-ids-<n>.txt so the bench can
-- check them against the database; done() prints one JSON line with the totals.

local threads = {}
local created = 0

function setup(thread)
  thread:set("tid", created)
  created = created + 1
  table.insert(threads, thread)
end

local site, key, run, phase, ids
local counter = 0
-- Globals, not locals: done() reads them from each thread with thread:get().
ok, other, unparsed = 0, 0, 0
local headers = {}
local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
}

function init(args)
  site, key, run, phase = args[1], args[2], args[3], tonumber(args[4]) + tid
  ids = assert(io.open(args[5] .. "/wrk-ids-" .. tid .. ".txt", "w"))
  ids:setvbuf("full")
  headers["Content-Type"] = "application/json"
  headers["x-api-key"] = key
  headers["User-Agent"] = agents[tid % #agents + 1]
end

function request()
  local id = string.format("%s-%04x-4000-8000-%012x", run, phase, counter)
  local body = string.format(
    '{"site_id":"%s","event_type":"pageview","path":"/docs/page-%d","url":"https://bench.example.com/docs/page-%d","referrer":"https://www.google.com/","event_id":"%s"}',
    site, counter % 16, counter % 16, id)
  counter = counter + 1
  return wrk.format("POST", "/api/event", headers, body)
end

function response(status, hdrs, body)
  if status == 200 then
    local id = body:match("(%x+%-%x+%-%x+%-%x+%-%x+)")
    if id then
      ok = ok + 1
      ids:write(id, "\n")
      if ok % 1000 == 0 then ids:flush() end
    else
      unparsed = unparsed + 1
    end
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local ok_total, other_total, unparsed_total = 0, 0, 0
  for _, thread in ipairs(threads) do
    ok_total = ok_total + (thread:get("ok") or 0)
    other_total = other_total + (thread:get("other") or 0)
    unparsed_total = unparsed_total + (thread:get("unparsed") or 0)
  end
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"ok":%d,"non_200":%d,"unparsed":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f}\n',
    summary.requests, summary.duration, ok_total, other_total, unparsed_total,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
