#!/usr/bin/env python3
"""Timing driver for bench/coldstart.sh (monotonic clock, bounded waits).

  coldstart.py start --label L --reps N --port P --target HOST:PORT --expect FILE
               [--ready-regex RE] [--retry-ms 1] [--timeout 20] -- CMD...
      N times: spawn CMD (a fresh process; the caller pins it with taskset), then
      poll the proxy on 127.0.0.1:P with an absolute-form GET of http://TARGET/1k on a
      new connection every retry-ms until a 200 answer whose body equals FILE arrives.
      Times (ms, from spawn): ready (the line matching --ready-regex on CMD's stdout),
      first (the full first good answer), and that request's own duration. Then CMD
      gets SIGTERM (SIGKILL after 10 s). Prints TSV rows.

  coldstart.py pool --label L --reps N --port P --target HOST:PORT --expect FILE
               --gw-port G --idle S [--gap S]
      N times: wait S seconds without a request (the pool goes cold: past
      pool.warm_for and pool.idle_lifetime), then a request ("cold"), GAP seconds
      later another ("warm"). Each on a new connection to the client, timed from
      connect to the last body byte. Before each, the client's established TCP
      connections to the gateway port are counted (ss): the tunnels in the pool.
      With --metrics, the client's TLS handshakes (all/resumed) from one request to the
      next are recorded (the request's own tunnel plus the pool's refills).
"""
import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compare"))
from httpio import read_response  # noqa: E402 - bench/compare/httpio.py


def now_ms():
    return time.monotonic_ns() / 1e6


def get(port, target, timeout):
    """One absolute-form GET on a new connection: (status, body) or raises OSError."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"GET http://{target}/1k HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
        r = read_response(s, to_eof=True)
        return r.status, r.body
    finally:
        s.close()


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def cmd_start(a, expect):
    print("label\trep\tready_ms\tfirst_ms\tfirst_req_ms\trefused\tbad_answers")
    for rep in range(1, a.reps + 1):
        ready = [None]
        t0 = now_ms()
        p = subprocess.Popen(a.cmd, stdout=subprocess.PIPE, stderr=open(a.stderr, "ab"))

        def reader():
            for line in p.stdout:
                if a.ready_regex and ready[0] is None and re.search(a.ready_regex, line.decode(errors="replace")):
                    ready[0] = now_ms() - t0

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        refused = bad = 0
        first = req = None
        deadline = t0 + a.timeout * 1000
        try:
            while now_ms() < deadline and p.poll() is None:
                t1 = now_ms()
                try:
                    st, body = get(a.port, a.target, 5)
                    if st == 200 and body == expect:
                        first, req = now_ms() - t0, now_ms() - t1
                        break
                    bad += 1
                except ConnectionRefusedError:
                    refused += 1
                except OSError:
                    bad += 1
                time.sleep(a.retry_ms / 1000)
            if a.ready_regex:
                # the ready line may come after the first answer; wait for it (bounded)
                for _ in range(500):
                    if ready[0] is not None or p.poll() is not None:
                        break
                    time.sleep(0.01)
        finally:
            stop(p)  # also when interrupted: the process we started never outlives us
        th.join(2)
        f = lambda v: f"{v:.2f}" if v is not None else "NA"
        print(f"{a.label}\t{rep}\t{f(ready[0]) if a.ready_regex else '-'}\t{f(first)}\t{f(req)}\t{refused}\t{bad}", flush=True)
        if first is None:
            print(f"{a.label} rep {rep}: no good answer within {a.timeout} s", file=sys.stderr)
        # the next process must be able to bind the port (bounded wait)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", a.port), timeout=0.1).close()
                time.sleep(0.05)
            except OSError:
                break


def tunnels(gw_port):
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{gw_port} )"],
                         capture_output=True, text=True, timeout=10).stdout
    return len([l for l in out.splitlines() if l.strip()])


def handshakes(url):
    """(handshakes, resumed) from the client's /metrics, or None."""
    if not url:
        return None
    try:
        import urllib.request
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None
    v = {}
    for line in text.splitlines():
        k, _, n = line.partition(" ")
        if k in ("msc_tls_handshakes_total", "msc_tls_handshakes_resumed_total"):
            v[k] = int(float(n))
    return v.get("msc_tls_handshakes_total"), v.get("msc_tls_handshakes_resumed_total")


def cmd_pool(a, expect):
    print("label\trep\tkind\tms\ttunnels_before\tok\thandshakes")
    prev = None
    rows = []
    for rep in range(1, a.reps + 1):
        for kind, wait in (("cold", a.idle), ("warm", a.gap)):
            time.sleep(wait)
            hs = handshakes(a.metrics)
            if rows and hs and prev and None not in hs and None not in prev:
                rows[-1][-1] = f"{hs[0] - prev[0]}/{hs[1] - prev[1]}"
            prev = hs
            n = tunnels(a.gw_port)
            t1 = now_ms()
            try:
                st, body = get(a.port, a.target, 10)
                ok = st == 200 and body == expect
            except OSError as e:
                print(f"{kind} rep {rep}: {e}", file=sys.stderr)
                ok = False
            rows.append([a.label, str(rep), kind, f"{now_ms() - t1:.3f}", str(n), str(int(ok)), "-"])
    time.sleep(a.gap)
    hs = handshakes(a.metrics)
    if rows and hs and prev and None not in hs and None not in prev:
        rows[-1][-1] = f"{hs[0] - prev[0]}/{hs[1] - prev[1]}"
    for r in rows:
        print("\t".join(r), flush=True)


ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["start", "pool"])
ap.add_argument("--label", required=True)
ap.add_argument("--reps", type=int, default=10)
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--target", required=True)
ap.add_argument("--expect", required=True)
ap.add_argument("--ready-regex")
ap.add_argument("--retry-ms", type=float, default=1.0)
ap.add_argument("--timeout", type=float, default=20)
ap.add_argument("--stderr", default=os.devnull)
ap.add_argument("--gw-port", type=int)
ap.add_argument("--idle", type=float, default=7)
ap.add_argument("--gap", type=float, default=1)
ap.add_argument("--metrics", help="the client's /metrics URL: TLS handshakes (all/resumed) after each request")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
argv = sys.argv[1:]
cmd = argv[argv.index("--") + 1:] if "--" in argv else []
argv = argv[: argv.index("--")] if "--" in argv else argv
a = ap.parse_args(argv)
a.cmd = cmd
expect = open(a.expect, "rb").read()
if a.mode == "start":
    if not a.cmd:
        ap.error("start needs -- CMD...")
    cmd_start(a, expect)
else:
    cmd_pool(a, expect)
