#!/usr/bin/env python3
"""Flood generator and legitimate-client prober for bench/flood.sh.

  flood.py flood --gw 127.0.0.1:PORT --silent N --stalled M --seconds S
      Keeps N silent TCP connections and M stalled ClientHellos (a TLS record
      header announcing 512 bytes plus 64 of them) open, re-opening each as the
      gateway drops it, for S seconds. Prints counts at the end.

  flood.py legit --gw 127.0.0.1:PORT --ca CA --cert CERT --key KEY --seconds S --pid PID
      Every 0.2 s: TCP connect + mTLS handshake + the gateway's probe request,
      each bounded by 5 s; prints one line per attempt (handshake ms, total ms,
      ok, gateway RSS KiB) and a summary.

Only 127.0.0.1; every loop is bounded in count and time.
"""

import argparse
import asyncio
import socket
import ssl
import sys
import time

HELLO_START = bytes([0x16, 0x03, 0x01, 0x02, 0x00]) + bytes(64)
MAX_OPENS_PER_SLOT = 100_000


def addr(s):
    host, port = s.rsplit(":", 1)
    assert host == "127.0.0.1", "traffic to 127.0.0.1 only"
    return host, int(port)


async def slot(host, port, payload, end, stats):
    for _ in range(MAX_OPENS_PER_SLOT):
        if time.monotonic() >= end:
            return
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, asyncio.TimeoutError):
            stats["connect_failed"] += 1
            await asyncio.sleep(0.05)
            continue
        stats["opened"] += 1
        try:
            if payload:
                w.write(payload)
            # Until the gateway closes it (or the run ends).
            left = end - time.monotonic()
            if left > 0:
                try:
                    while await asyncio.wait_for(r.read(1024), left):
                        left = end - time.monotonic()
                        if left <= 0:
                            break
                    stats["dropped_by_gateway"] += 1
                except asyncio.TimeoutError:
                    pass
        except OSError:
            stats["dropped_by_gateway"] += 1
        finally:
            w.close()


async def flood(a):
    host, port = addr(a.gw)
    end = time.monotonic() + a.seconds
    stats = {"opened": 0, "dropped_by_gateway": 0, "connect_failed": 0}
    tasks = [slot(host, port, b"", end, stats) for _ in range(a.silent)]
    tasks += [slot(host, port, HELLO_START, end, stats) for _ in range(a.stalled)]
    await asyncio.gather(*tasks)
    print(f"flood: silent={a.silent} stalled={a.stalled} seconds={a.seconds} " + " ".join(f"{k}={v}" for k, v in stats.items()))


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def legit(a):
    host, port = addr(a.gw)
    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.load_cert_chain(a.cert, a.key)
    end = time.monotonic() + a.seconds
    hs, total, fails, peak = [], [], 0, 0
    for _ in range(int(a.seconds / 0.2) + 1):
        if time.monotonic() >= end:
            break
        t0 = time.monotonic()
        ok, t_hs = False, float("nan")
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                s.settimeout(max(0.1, 5 - (time.monotonic() - t0)))
                with ctx.wrap_socket(s, server_hostname="localhost") as t:
                    t_hs = (time.monotonic() - t0) * 1000
                    t.sendall(b"GET /.well-known/msc/probe HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
                    ok = t.recv(64).startswith(b"HTTP/1.1 2")
        except (OSError, ssl.SSLError):
            pass
        t_total = (time.monotonic() - t0) * 1000
        rss = rss_kib(a.pid)
        peak = max(peak, rss)
        print(f"{time.time():.1f}\t{t_hs:.1f}\t{t_total:.1f}\t{int(ok)}\t{rss}", flush=True)
        if ok:
            hs.append(t_hs)
            total.append(t_total)
        else:
            fails += 1
        time.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))
    n = len(total)
    q = lambda v, p: sorted(v)[min(len(v) - 1, int(p * len(v)))] if v else float("nan")
    print(
        f"# legit: attempts={n + fails} ok={n} failed={fails} "
        f"handshake_ms p50={q(hs, 0.5):.1f} p90={q(hs, 0.9):.1f} max={max(hs, default=float('nan')):.1f} "
        f"total_ms p50={q(total, 0.5):.1f} p90={q(total, 0.9):.1f} max={max(total, default=float('nan')):.1f} "
        f"over_1s={sum(1 for t in total if t > 1000) + fails} "
        f"gateway_rss_kib peak={peak} end={rss_kib(a.pid)}"
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["flood", "legit"])
    p.add_argument("--gw", required=True)
    p.add_argument("--silent", type=int, default=1500)
    p.add_argument("--stalled", type=int, default=5000)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--ca")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--pid", type=int, default=0)
    a = p.parse_args()
    if a.mode == "flood":
        asyncio.run(flood(a))
    else:
        legit(a)


if __name__ == "__main__":
    sys.exit(main())
