#!/usr/bin/env python3
"""Load driver for bench/tunnels.sh: N concurrent CONNECT tunnels, all active, every byte checked.

  tunnels.py --ports P1[,P2...] --target HOST:PORT --files DIR --n N --dur S
             --client-pids PIDS --gateway-pids PIDS --out RESULT.json

1. Open phase: N tunnels (spread round-robin over the proxy ports), at most
   --open-concurrency at a time: TCP connect, "CONNECT TARGET", 200 expected, then one
   GET inside the tunnel whose body must equal the file. Bounded by --open-deadline.
2. Traffic phase, --dur seconds, all tunnels at once: each tunnel sends a GET, reads the
   answer (keep-alive inside the tunnel), compares the body with the file byte for byte,
   and sends the next one at once. Tunnel i's j-th request asks for file (7 i + j) mod F, so
   answers crossed between tunnels are caught as mismatches, not just corrupted bytes.
   Every request is bounded by --req-timeout.
3. Samples VmRSS / VmHWM and CPU ticks of the client and gateway processes (and of this
   driver: near 100 % of a core means the driver, not the proxy, set the pace) before the
   open phase, after it, and every second of the traffic phase.
Writes RESULT.json and prints a one-line summary on stderr.
"""
import argparse
import asyncio
import json
import os
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--ports", required=True)
ap.add_argument("--target", required=True)
ap.add_argument("--files", required=True)
ap.add_argument("--n", type=int, default=10000)
ap.add_argument("--dur", type=float, default=30)
ap.add_argument("--open-concurrency", type=int, default=200)
ap.add_argument("--open-deadline", type=float, default=180)
ap.add_argument("--req-timeout", type=float, default=30)
ap.add_argument("--client-pids", default="")
ap.add_argument("--gateway-pids", default="")
ap.add_argument("--out", required=True)
a = ap.parse_args()

PORTS = [int(p) for p in a.ports.split(",")]
names = sorted(os.listdir(a.files))
FILES = [open(os.path.join(a.files, f), "rb").read() for f in names]
NF = len(FILES)
REQS = [f"GET /t/{f} HTTP/1.1\r\nHost: {a.target}\r\n\r\n".encode() for f in names]
CPIDS = [int(p) for p in a.client_pids.split()]
GPIDS = [int(p) for p in a.gateway_pids.split()]
HZ = os.sysconf("SC_CLK_TCK")


def status_kib(pids, field):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        t += int(line.split()[1])
        except OSError:
            pass
    return t


def ticks(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                r = f.read().rsplit(")", 1)[1].split()
            t += int(r[11]) + int(r[12])
        except OSError:
            pass
    return t


def sample():
    return {
        "t": time.monotonic(),
        "client_rss_kib": status_kib(CPIDS, "VmRSS"),
        "gateway_rss_kib": status_kib(GPIDS, "VmRSS"),
        "client_ticks": ticks(CPIDS),
        "gateway_ticks": ticks(GPIDS),
        "driver_ticks": ticks([os.getpid()]),
    }


class Stats:
    def __init__(self):
        self.requests = 0
        self.bytes = 0
        self.mismatches = 0
        self.errors = 0
        self.err_msgs = {}

    def err(self, where, e):
        self.errors += 1
        k = f"{where}: {type(e).__name__}: {e}"[:160]
        self.err_msgs[k] = self.err_msgs.get(k, 0) + 1


def first_line(head):
    return head.split(b"\r\n", 1)[0]


async def one_request(r, w, fi, st):
    w.write(REQS[fi])
    head = await r.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise IOError(f"answer {first_line(head)!r}")
    clen = None
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            clen = int(v.strip())
    if clen is None:
        raise IOError("no Content-Length")
    body = await r.readexactly(clen)
    if body != FILES[fi]:
        st.mismatches += 1
    st.requests += 1
    st.bytes += clen


async def open_tunnel(i, sem, st, deadline):
    async with sem:
        if time.monotonic() > deadline:
            raise TimeoutError("open deadline")
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", PORTS[i % len(PORTS)], limit=1 << 16),
                                      a.req_timeout)
        try:
            w.write(f"CONNECT {a.target} HTTP/1.1\r\nHost: {a.target}\r\n\r\n".encode())
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), a.req_timeout)
            if b" 200" not in head.split(b"\r\n", 1)[0]:
                raise IOError(f"CONNECT answered {first_line(head)!r}")
            await asyncio.wait_for(one_request(r, w, (7 * i) % NF, st), a.req_timeout)
        except BaseException:
            w.close()
            raise
        return r, w


async def traffic(i, r, w, st, stop_at, gaps, counts):
    j = 1
    last = time.monotonic()
    maxgap = 0.0
    n = 0
    try:
        while time.monotonic() < stop_at:
            await asyncio.wait_for(one_request(r, w, (7 * i + j) % NF, st), a.req_timeout)
            now = time.monotonic()
            maxgap = max(maxgap, now - last)
            last = now
            j += 1
            n += 1
    except Exception as e:  # noqa: BLE001 - counted and reported
        st.err("traffic", e)
    gaps[i] = max(maxgap, stop_at - last if last < stop_at else 0.0)
    counts[i] = n


async def main():
    res = {"n": a.n, "ports": PORTS, "files": NF, "file_bytes": len(FILES[0]), "dur_s": a.dur}
    s_before = sample()
    st_open = Stats()
    sem = asyncio.Semaphore(a.open_concurrency)
    t0 = time.monotonic()
    deadline = t0 + a.open_deadline
    results = await asyncio.gather(*(open_tunnel(i, sem, st_open, deadline) for i in range(a.n)), return_exceptions=True)
    open_s = time.monotonic() - t0
    tunnels = []
    for i, x in enumerate(results):
        if isinstance(x, BaseException):
            st_open.err("open", x)
        else:
            tunnels.append((i, x[0], x[1]))
    await asyncio.sleep(1)
    s_open = sample()
    print(f"opened {len(tunnels)} of {a.n} tunnels in {open_s:.1f} s ({st_open.errors} errors)", file=sys.stderr)

    st = Stats()
    gaps, counts = {}, {}
    t1 = time.monotonic()
    stop_at = t1 + a.dur
    s_start = sample()
    peak = dict(s_start)

    async def sampler():
        while time.monotonic() < stop_at:
            await asyncio.sleep(1)
            s = sample()
            for k in ("client_rss_kib", "gateway_rss_kib"):
                peak[k] = max(peak[k], s[k])

    tasks = [asyncio.create_task(traffic(i, r, w, st, stop_at, gaps, counts)) for (i, r, w) in tunnels]
    samp = asyncio.create_task(sampler())
    await asyncio.gather(*tasks)
    await samp
    t2 = time.monotonic()
    s_end = sample()
    alive = sum(1 for (i, r, w) in tunnels if not r.at_eof())
    for (_, _, w) in tunnels:
        w.close()
    el = t2 - t1
    cnt = sorted(counts.values()) or [0]
    gp = sorted(gaps.values()) or [0.0]
    d = lambda k: s_end[k] - s_start[k]
    res.update({
        "opened": len(tunnels), "open_failed": a.n - len(tunnels), "open_s": round(open_s, 2),
        "open_errors": st_open.err_msgs, "open_mismatches": st_open.mismatches,
        "traffic_s": round(el, 2), "requests": st.requests, "bytes_verified": st.bytes,
        "mismatches": st.mismatches, "errors": st.errors, "error_kinds": st.err_msgs,
        "requests_per_s": round(st.requests / el, 1), "mb_per_s": round(st.bytes / el / 1e6, 2),
        "tunnels_with_requests": sum(1 for v in counts.values() if v > 0),
        "req_per_tunnel_min": cnt[0], "req_per_tunnel_median": cnt[len(cnt) // 2], "req_per_tunnel_max": cnt[-1],
        "max_gap_s_median": round(gp[len(gp) // 2], 3), "max_gap_s_max": round(gp[-1], 3),
        "still_open_at_end": alive,
        "rss_kib": {"before": {k: s_before[k] for k in ("client_rss_kib", "gateway_rss_kib")},
                    "opened": {k: s_open[k] for k in ("client_rss_kib", "gateway_rss_kib")},
                    "traffic_peak": {k: peak[k] for k in ("client_rss_kib", "gateway_rss_kib")},
                    "traffic_end": {k: s_end[k] for k in ("client_rss_kib", "gateway_rss_kib")}},
        "hwm_kib": {"client": status_kib(CPIDS, "VmHWM"), "gateway": status_kib(GPIDS, "VmHWM")},
        "cpu_pct_of_core": {k: round(100 * d(k + "_ticks") / HZ / el, 1) for k in ("client", "gateway", "driver")},
        "cpu_us_per_request": {k: round(d(k + "_ticks") / HZ * 1e6 / max(st.requests, 1), 1) for k in ("client", "gateway")},
    })
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"traffic {el:.1f} s: {st.requests} requests, {st.bytes} bytes verified, {st.mismatches} mismatches, "
          f"{st.errors} errors, {res['requests_per_s']} req/s; driver {res['cpu_pct_of_core']['driver']} % of a core",
          file=sys.stderr)


asyncio.run(main())
