#!/usr/bin/env python3
"""Markdown summary of bench/compare.sh results.

usage: summarize.py RAW.tsv [ENV.txt] [--foreign-max PCT]

raw.tsv: chain, workload, rep, metric, value, foreign_cpu_pct, note (one row per metric
per run). Figures are medians over runs; CPU per GB is total ticks / total bytes over
all runs. Ratios are always msc / peer; the "better" column says which direction wins.
"best peer" is, per row, the peer with the highest figure for ↑ metrics and the lowest
for ↓ metrics (analogue cells included, and marked), and msc/best its ratio.
"""
import collections
import os
import statistics
import sys

args = [a for a in sys.argv[1:] if not a.startswith("--")]
FOREIGN_MAX = 5.0
if "--foreign-max" in sys.argv:
    FOREIGN_MAX = float(sys.argv[sys.argv.index("--foreign-max") + 1])
raw_path = args[0]
env_path = args[1] if len(args) > 1 else None
HZ = os.sysconf("SC_CLK_TCK")

CHAINS = ["direct", "msc", "haproxy", "nginx", "squid", "stunnel"]
PEERS = ["haproxy", "nginx", "squid", "stunnel"]
TITLE = {"direct": "direct", "msc": "msc", "haproxy": "HAProxy", "nginx": "nginx", "squid": "squid",
         "stunnel": "stunnel"}

# rows[(chain, workload)][metric] -> list of (rep, value, foreign, note)
rows = collections.defaultdict(lambda: collections.defaultdict(list))
with open(raw_path) as f:
    header = f.readline()
    for line in f:
        p = line.rstrip("\n").split("\t")
        if len(p) < 5:
            continue
        p += ["-"] * (7 - len(p))
        ch, wl, rep, metric, value, foreign, note = p[:7]
        rows[(ch, wl)][metric].append((rep, value, foreign, note))
present = [c for c in CHAINS if any(k[0] == c for k in rows)]


def num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def clean_reps(ch, wl):
    """Runs of (ch, wl) during which foreign CPU stayed below FOREIGN_MAX. If there is
    none, every run is used and the cell is marked contended (*). None = not applicable
    (no foreign figure recorded, e.g. memory rows)."""
    r = rows.get((ch, wl), {})
    main = r.get("rps") or r.get("mb_per_s")
    if not main:
        return None
    clean = {x[0] for x in main if num(x[2]) is not None and num(x[2]) < FOREIGN_MAX}
    return clean or None


def contended(ch, wl):
    r = rows.get((ch, wl), {})
    main = r.get("rps") or r.get("mb_per_s")
    return bool(main) and clean_reps(ch, wl) is None and any(num(x[2]) is not None for x in main)


def vals(ch, wl, metric, all_runs=False):
    keep = None if all_runs else clean_reps(ch, wl)
    return [v for v in (num(r[1]) for r in rows.get((ch, wl), {}).get(metric, [])
                        if keep is None or r[0] in keep) if v is not None]


def med(ch, wl, metric):
    v = vals(ch, wl, metric)
    return statistics.median(v) if v else None


def fmt(v, kind):
    if v is None:
        return None
    if kind == "int":
        return f"{v:,.0f}".replace(",", " ")
    if kind == "ms":
        return f"{v:.2f}"
    if kind == "us":
        return f"{v:.1f}" if v < 1000 else f"{v:,.0f}".replace(",", " ")
    if kind == "s":
        return f"{v:.2f}"
    if kind == "kib1":
        return f"{v:.1f}"
    return str(v)


def status(ch, wl):
    """Why a cell is empty: skipped / failed / not measured."""
    r = rows.get((ch, wl), {})
    if "skipped" in r:
        reason = r["skipped"][0][3]
        if reason not in SKIPFOOT:
            SKIPFOOT[reason] = "efghijklmnop"[len(SKIPFOOT)]
            FOOT[SKIPFOOT[reason]] = "not measured: " + reason
        used_foot.add(SKIPFOOT[reason])
        return f"n/a ({SKIPFOOT[reason]})"
    if "failed" in r and not any(m in r for m in ("rps", "mb_per_s")):
        return f"FAILED ({len(r['failed'])} runs)"
    return None


# analogues used for peers that are not HTTP forward proxies (squid does CONNECT itself)
ANALOG = {}
for _p in ("haproxy", "nginx", "stunnel"):
    ANALOG[(_p, "connect_tls_close")] = "a"
    ANALOG[(_p, "dl_connect")] = "b"
    ANALOG[(_p, "mem_tunnel")] = "c"
    ANALOG[(_p, "mem_tunnel_after")] = "c"
    ANALOG[(_p, "probe_tunnel")] = "c"
ANALOG[("stunnel", "mem_ka")] = "d"
ANALOG[("stunnel", "mem_ka_after")] = "d"
FOOT = {
    "*": f"contended: in every run of this cell, processes outside the benchmark used ≥ {FOREIGN_MAX:g}% "
         "of a core (other sessions share this 2-core VM), so the median is over contended runs. "
         "Throughput and latency suffer most; CPU per request or per GB is the most robust figure. "
         "Otherwise a cell's median uses only the runs below the threshold.",
    "a": "HAProxy, nginx and stunnel cannot serve CONNECT; their row is the closest analogue: oha "
         "`--disable-keepalive` to a tcp tunnel port (haproxy tcp mode / nginx stream module / stunnel "
         "service) forwarding to nginx:TLS, i.e. a new tunnel with a gateway TLS handshake plus the inner "
         "TLS handshake per request, but without the CONNECT exchange. squid's row is real CONNECT.",
    "b": "tcp tunnel (haproxy tcp mode / nginx stream / stunnel) with plain GET inside, instead of CONNECT.",
    "c": "tcp tunnels (haproxy tcp mode / nginx stream / stunnel), each carrying one GET, instead of "
         "CONNECT tunnels.",
    "d": "stunnel is a TCP tunnel: each browser connection is a tunnel with its own gateway TLS connection.",
}
used_foot = set()
SKIPFOOT = {}


def cell(ch, wl, metric, kind, value=None):
    if value is None:
        value = med(ch, wl, metric)
    s = fmt(value, kind)
    if s is None:
        return status(ch, wl) or "–"
    mark = ANALOG.get((ch, wl))
    if mark:
        used_foot.add(mark)
        s += f" ({mark})"
    if contended(ch, wl):
        used_foot.add("*")
        s += " *"
    nfail = len(rows.get((ch, wl), {}).get("failed", []))
    if nfail:
        s += f" [{nfail} run(s) failed]"
    return s


def ratio(a, b, kind=None):
    if a is None or b is None or b == 0:
        return "–"
    if kind == "kib1" and abs(b) < 1.0:
        return "– (peer < 1)"  # a per-connection cost of ~0 KiB: a ratio would mean nothing
    return f"{a / b:.2f}×"


out = []
env = {}
if env_path and os.path.exists(env_path):
    for line in open(env_path):
        k, _, v = line.partition(":")
        env.setdefault(k.strip(), v.strip())
out.append(f"## msc vs {', '.join(TITLE[p] for p in PEERS if p in present) or 'peers'} on this machine "
           f"({env.get('date', '?')})")
out.append("")
for k in ("command", "commit", "msc code", "msc", "kernel", "pinning", "knobs", "duration"):
    if k in env:
        out.append(f"- {k}: `{env[k]}`" if k == "command" else f"- {k}: {env[k]}")
out.append("")

hdr_chains = [TITLE[c] for c in present]
ratio_peers = [p for p in PEERS if p in present] if "msc" in present else []
best_cols = ["best peer", "msc/best"] if ratio_peers else []
out.append("| workload | metric | better | " + " | ".join(hdr_chains + best_cols + [f"msc/{TITLE[p]}" for p in ratio_peers])
           + " |")
out.append("|---|---|---|" + "---|" * (len(present) + len(best_cols) + len(ratio_peers)))


def add(label, wl, metric, kind, better, values=None, no_ratio=False):
    """values: optional dict chain -> precomputed value"""
    cells, nums = [], {}
    for c in present:
        v = values.get(c) if values is not None else med(c, wl, metric)
        nums[c] = v
        if c == "direct" and wl == "dl_connect" and (c, wl) not in rows and v is not None:
            cells.append("= GET row")
        elif c == "direct" and metric in ("cpu_us_per_req", "client_cpu_us_per_req", "cpu_s_per_gb", "client_cpu_s_per_gb"):
            cells.append("–")
        elif v is None and metric == "resumed_pct" and "resumed_pct_na" in rows.get((c, wl), {}):
            cells.append("n/a (no new conn)")
        else:
            cells.append(cell(c, wl, metric, kind, v))
    rs = ["–" if no_ratio else ratio(nums.get("msc"), nums.get(p), kind) for p in ratio_peers]
    best = []
    if best_cols:
        cand = [(nums[p], p) for p in ratio_peers if nums.get(p) is not None]
        if no_ratio or not better or not cand:
            best = ["–", "–"]
        else:
            # ties go to the first peer in PEERS order
            v, p = (max if better == "up" else min)(cand, key=lambda c: c[0])
            mark = ANALOG.get((p, wl))
            best = [f"{TITLE[p]}{f' ({mark})' if mark else ''}", ratio(nums.get("msc"), v, kind)]
    arrow = {"up": "↑ higher", "down": "↓ lower", "": ""}[better]
    out.append(f"| {label} | {metric_label(metric)} | {arrow} | " + " | ".join(cells + best + rs) + " |")


def metric_label(m):
    return {
        "rps": "requests/s", "p50_ms": "p50 latency ms", "p99_ms": "p99 latency ms",
        "cpu_us_per_req": "proxy CPU µs/req (client+gateway)", "client_cpu_us_per_req": "client-side CPU µs/req",
        "errors": "errors (sum of runs)", "proxycpu_busy_pct": "proxy core busy %",
        "mb_per_s": "MB/s (10^6 B/s, median)", "cpu_s_per_gb": "proxy CPU s/GB (client+gateway)",
        "client_cpu_s_per_gb": "client-side CPU s/GB",
        "rss_client_kib": "client RSS KiB", "rss_gateway_kib": "gateway RSS KiB",
        "kib_per_conn_client": "client KiB/conn", "kib_per_conn_gateway": "gateway KiB/conn",
        "kib_per_conn_total": "client+gateway KiB/conn",
        "gw_tls_conns_per_req": "new gateway TLS conns per request (HAProxy stats)",
        "gw_tls_per_req": "new gateway TLS connections per request (capture)",
        "resumed_pct": "% of those resumed (pre_shared_key)",
        "gw_tls_psk_offered": "ClientHellos offering a session",
        "ha_reuse_pct": "HAProxy SslFrontendSessionReuse_pct (cross-check)",
    }.get(m, m)


WL_LABEL = {
    "get_ka": "1 KiB GET, 64 keep-alive conns (wrk)",
    "get_close": "1 KiB GET, Connection: close (wrk)",
    "connect_tls_close": "new CONNECT + TLS per request (oha)",
    "dl_get": "100 MiB GET absolute-form (curl -x)",
    "dl_connect": "100 MiB through CONNECT (curl -p -x)",
}
for wl in ("get_ka", "get_close", "connect_tls_close"):
    if not any((c, wl) in rows for c in present):
        continue
    lab = WL_LABEL[wl]
    add(lab, wl, "rps", "int", "up")
    add(lab, wl, "p50_ms", "ms", "down")
    add(lab, wl, "p99_ms", "ms", "down")
    add(lab, wl, "cpu_us_per_req", "us", "down")
    add(lab, wl, "client_cpu_us_per_req", "us", "down")
    add(lab, wl, "proxycpu_busy_pct", "int", "", no_ratio=True)
    if any(vals(c, wl, "gw_tls_conns_per_req") for c in present):
        add(lab, wl, "gw_tls_conns_per_req", "ms", "", no_ratio=True)
    errs = {c: (sum(vals(c, wl, "errors", True)) if vals(c, wl, "errors", True) else None) for c in present}
    add(lab, wl, "errors", "int", "down", values=errs, no_ratio=True)


def dl_cpu(ch, wl, ticks_metric):
    t = sum(vals(ch, wl, ticks_metric))
    b = sum(vals(ch, wl, "bytes"))
    if not b or not vals(ch, wl, ticks_metric):
        return None
    return t / HZ / (b / 1e9)


for wl in ("dl_get", "dl_connect"):
    if not any((c, wl) in rows for c in present):
        continue
    lab = WL_LABEL[wl]
    mb = {c: med(c, wl, "mb_per_s") for c in present}
    if "direct" in present and mb.get("direct") is None:
        mb["direct"] = med("direct", "dl_get", "mb_per_s")  # direct has no proxy: same download
    add(lab, wl, "mb_per_s", "int", "up", values=mb)
    add(lab, wl, "cpu_s_per_gb", "s", "down", values={c: dl_cpu(c, wl, "cpu_ticks") for c in present})
    add(lab, wl, "client_cpu_s_per_gb", "s", "down", values={c: dl_cpu(c, wl, "client_cpu_ticks") for c in present})

mem_chains = [c for c in present if c != "direct"]
if any((c, "mem_idle") in rows for c in mem_chains):
    add("RSS idle (after start)", "mem_idle", "rss_client_kib", "int", "down")
    add("RSS idle (after start)", "mem_idle", "rss_gateway_kib", "int", "down")
    for wl, lab in (("mem_ka", "idle keep-alive browser conns"), ("mem_tunnel", "idle CONNECT tunnels")):
        if not any((c, wl) in rows for c in mem_chains):
            continue
        n = {c: med(c, wl, "conns_ok") for c in present}
        nn = sorted({int(v) for v in n.values() if v})
        label = f"RSS with {'/'.join(map(str, nn)) or '?'} {lab}"
        add(label, wl, "rss_client_kib", "int", "down")
        add(label, wl, "rss_gateway_kib", "int", "down")
        for side, m in (("client", "kib_per_conn_client"), ("gateway", "kib_per_conn_gateway")):
            per = {}
            for c in present:
                w, i = med(c, wl, f"rss_{side}_kib"), med(c, "mem_idle", f"rss_{side}_kib")
                per[c] = (w - i) / n[c] if (w is not None and i is not None and n.get(c)) else None
            add(label, wl, m, "kib1", "down", values=per)
        if any((c, wl + "_after") in rows for c in mem_chains):
            after = f"RSS 3 s after those {lab.split(' ', 1)[1]} closed"
            add(after, wl + "_after", "rss_client_kib", "int", "down")
            add(after, wl + "_after", "rss_gateway_kib", "int", "down")
    add("peak RSS (VmHWM, end of run)", "mem_peak", "rss_client_kib", "int", "down")
    add("peak RSS (VmHWM, end of run)", "mem_peak", "rss_gateway_kib", "int", "down")

for wl, lab in (("probe_close", "new browser connections, absolute-form GET + close"),
                ("probe_tunnel", "new tunnels (CONNECT, or a tcp tunnel)")):
    if not any((c, wl) in rows for c in present):
        continue
    n = sorted({int(v) for v in (med(c, wl, "requests") for c in present) if v})
    label = f"resumption probe: {'/'.join(map(str, n)) or '?'} {lab}"
    add(label, wl, "gw_tls_per_req", "ms", "", no_ratio=True)
    add(label, wl, "resumed_pct", "kib1", "", no_ratio=True)
    add(label, wl, "gw_tls_psk_offered", "int", "", no_ratio=True)
    if any(vals(c, wl, "ha_reuse_pct") for c in present):
        add(label, wl, "ha_reuse_pct", "int", "", no_ratio=True)

out.append("")
for k in sorted(used_foot, key=lambda k: (k != "*", k)):
    out.append(f"({k}) {FOOT[k]}  ")
out.append("")
out.append("Ratios are msc / peer for every metric; read them with the *better* column: for ↑ "
           "metrics a ratio above 1 means msc is better, for ↓ metrics (latency, CPU, memory) a ratio "
           "below 1 means msc is better. KiB/conn = (RSS with the idle connections − RSS idle after "
           "start) / connections actually opened. Proxy CPU is utime+stime of the chain's processes "
           "from /proc/PID/stat; all proxy processes share one core. nginx figures (CPU, RSS) are "
           "master + worker of each side. Resumption probe: new gateway TLS connections (ServerHellos "
           "captured on the client -> gateway hop during the probe and 1 s after it) per request, and the "
           "share of them that resumed a session (ServerHello with pre_shared_key); a chain that serves "
           "new browser connections from pooled gateway connections opens none (n/a).")
out.append("")

# ---- paired ratios: msc against the best peer of the same round
# The machine drifts between rounds (every chain is faster in some rounds), and the
# rounds interleave the chains, so msc / best peer within a round is the steadier figure.
PAIRED = [("get_ka", "rps", "up"), ("get_ka", "cpu_us_per_req", "down"), ("get_ka", "client_cpu_us_per_req", "down"),
          ("get_close", "rps", "up"), ("get_close", "cpu_us_per_req", "down"),
          ("connect_tls_close", "rps", "up"), ("connect_tls_close", "cpu_us_per_req", "down"),
          ("dl_get", "mb_per_s", "up"), ("dl_connect", "mb_per_s", "up")]


def per_rep(ch, wl, metric):
    keep = clean_reps(ch, wl)
    return {r[0]: num(r[1]) for r in rows.get((ch, wl), {}).get(metric, [])
            if num(r[1]) is not None and (keep is None or r[0] in keep)}


paired = []
if "msc" in present:
    for wl, metric, better in PAIRED:
        m = per_rep("msc", wl, metric)
        rs = []
        for rep, mv in sorted(m.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0):
            cand = [(per_rep(p, wl, metric).get(rep), p) for p in PEERS if p in present]
            cand = [c for c in cand if c[0]]
            if not cand or not mv:
                continue
            v, p = (max if better == "up" else min)(cand, key=lambda c: c[0])
            rs.append((mv / v, p))
        if rs:
            paired.append((wl, metric, better, rs))
if paired:
    out.append("### msc / best peer, round by round")
    out.append("")
    out.append("Each round runs every chain one after the other; the ratio is msc's figure over the best "
               "peer's in the same round (analogue peers included), so a drift of the machine between "
               "rounds cancels out.")
    out.append("")
    out.append("| workload | metric | better | per round (best peer) | median | worst for msc |")
    out.append("|---|---|---|---|---|---|")
    for wl, metric, better, rs in paired:
        vals_ = [r for r, _ in rs]
        worst = min(vals_) if better == "up" else max(vals_)
        per = ", ".join(f"{r:.2f}× ({TITLE[p]})" for r, p in rs)
        arrow = {"up": "↑", "down": "↓"}[better]
        out.append(f"| {WL_LABEL.get(wl, wl)} | {metric_label(metric)} | {arrow} | {per} | "
                   f"{statistics.median(vals_):.2f}× | {worst:.2f}× |")
    out.append("")

# ---- spread and guard details
out.append("### Runs: spread and contention")
out.append("")
out.append("Values in parentheses were left out of the medians (contended while other runs of the cell were not).")
out.append("")
out.append("| chain | workload | runs | value per run | max foreign CPU % | runs with foreign ≥ "
           f"{FOREIGN_MAX:g}% |")
out.append("|---|---|---|---|---|---|")
for (ch, wl), r in rows.items():
    main = "rps" if "rps" in r else "mb_per_s" if "mb_per_s" in r else None
    if not main:
        continue
    vs = [x[1] for x in r[main]]
    fs = [num(x[2]) for x in r[main] if num(x[2]) is not None]
    dirty = sum(1 for v in fs if v >= FOREIGN_MAX)
    unit = "req/s" if main == "rps" else "MB/s"
    used = clean_reps(ch, wl)
    shown = [(x[1] if used is None or x[0] in used else f"({x[1]})") for x in r[main]]
    out.append(f"| {ch} | {wl} | {len(vs)} | {', '.join(shown)} {unit} | {max(fs) if fs else '-'} | {dirty} |")
out.append("")

notes = []
for (ch, wl), r in rows.items():
    for rep, v, _, note in r.get("errors", []):
        if num(v) and num(v) > 0:
            notes.append(f"- {ch} {wl} run {rep}: {int(num(v))} errors ({note})")
    for rep, v, _, note in r.get("failed", []):
        notes.append(f"- {ch} {wl} run {rep}: FAILED: {note}")
    for rep, v, _, note in r.get("skipped", []):
        if rep == "1":
            notes.append(f"- {ch} {wl}: skipped: {note}")
    for rep, v, _, note in r.get("conns_ok", []):
        notes.append(f"- {ch} {wl}: {int(num(v) or 0)} connections opened; {note}")
if notes:
    out.append("### Errors, failures, skipped rows, idle-connection counts")
    out.append("")
    out += notes
    out.append("")
print("\n".join(out))
