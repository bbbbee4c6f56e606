-- specweb.lua: wrk script for the Knot comparison.  Each request fetches
-- a URL drawn from the SPECweb99-like mix that specweb_fileset.py wrote
-- (urls.txt: "probability path size" lines), and done() prints one line
-- the driver parses.
--
--   wrk -t2 -c100 -d3s -s specweb.lua http://127.0.0.1:PORT -- URLS.txt SEED
--
-- wrk is the bottleneck of these runs (it saturates a core before the
-- servers do), so the per-request work here is kept small: every request
-- string is formatted once in init, and a request is one random number and
-- a binary search over the cumulative probabilities.  No response()
-- callback: defining one makes wrk hand every header and body to Lua.
--
-- Each wrk thread has its own Lua state and so its own generator; setup()
-- numbers the threads so each seeds differently but reproducibly.

local nthreads = 0

function setup(thread)
   nthreads = nthreads + 1
   thread:set("thread_no", nthreads)
end

local cdf, reqs, n, total

function init(args)
   local list = args[1]
   local seed = tonumber(args[2] or "1")
   if list == nil then
      error("specweb.lua: pass the URL list after --")
   end
   math.randomseed(seed * 1000 + (thread_no or 0))
   -- LuaJIT's first draws after seeding are poorly mixed
   for _ = 1, 16 do math.random() end
   cdf, reqs, n, total = {}, {}, 0, 0
   for line in io.lines(list) do
      if line:sub(1, 1) ~= "#" then
         local p, path = line:match("^(%S+)%s+(%S+)")
         if p then
            n = n + 1
            total = total + tonumber(p)
            cdf[n] = total
            reqs[n] = wrk.format("GET", path)
         end
      end
   end
   if n == 0 then
      error("specweb.lua: no URLs in " .. list)
   end
end

function request()
   local r = math.random() * total
   local lo, hi = 1, n
   while lo < hi do
      local mid = math.floor((lo + hi) / 2)
      if cdf[mid] < r then lo = mid + 1 else hi = mid end
   end
   return reqs[lo]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "KNOTBENCH requests=%d bytes=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f " ..
      "connect=%d read=%d write=%d timeout=%d status=%d\n",
      summary.requests, summary.bytes, summary.duration,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean,
      e.connect, e.read, e.write, e.timeout, e.status))
end
