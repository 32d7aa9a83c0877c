#!/usr/bin/env python3
"""bench/coldstart.sh raw.tsv -> summary.md (markdown on stdout).

  coldstart_summary.py RAW.tsv ENV.txt [--foreign-max PCT]
Median, min, max (and the count) of each figure.
"""
import csv
import statistics
import sys
from collections import defaultdict

raw, envf = sys.argv[1], sys.argv[2]
fmax = float(sys.argv[sys.argv.index("--foreign-max") + 1]) if "--foreign-max" in sys.argv else 5.0
rows = list(csv.DictReader(open(raw), delimiter="\t"))
print("# Cold start (bench/coldstart.sh)\n")
print("```")
print(open(envf).read().strip())
print("```\n")
dirty = [r for r in rows if float(r["foreign_cpu_pct"] or 0) >= fmax]
if dirty:
    print(f"**Contended:** {len(dirty)} of {len(rows)} values were measured with foreign CPU >= {fmax} % "
          f"of a core (max {max(float(r['foreign_cpu_pct']) for r in dirty):.1f} %). Not a record.\n")

LABEL = {
    "ready_ms": "spawn → ready line",
    "first_ms": "spawn → first proxied answer",
    "first_req_ms": "that first request alone",
    "cold_ms": "request after the pool went cold",
    "warm_ms": "request on a warm pool",
}
vals = defaultdict(list)
notes = defaultdict(list)
for r in rows:
    if r["value"] == "-":
        continue  # not applicable (HAProxy prints no ready line)
    try:
        v = float(r["value"])
    except ValueError:
        notes[(r["part"], r["chain"], r["metric"])].append(f"rep {r['rep']}: {r['value']}")
        continue
    vals[(r["part"], r["chain"], r["metric"])].append(v)
    if r["note"] not in ("-", ""):
        notes[(r["part"], r["chain"], r["metric"])].append(r["note"])

print("| part | chain | figure | n | median ms | min ms | max ms | notes |")
print("|---|---|---|---|---|---|---|---|")
for key, v in vals.items():
    part, ch, m = key
    n = notes.get(key, [])
    # summarise notes: refused/bad counts, tunnels before
    nn = ""
    if n:
        uniq = sorted(set(n))
        nn = "; ".join(uniq[:4]) + (f" (+{len(uniq) - 4} more)" if len(uniq) > 4 else "")
    print(f"| {part} | {ch} | {LABEL.get(m, m)} | {len(v)} | {statistics.median(v):.2f} | {min(v):.2f} | {max(v):.2f} | {nn} |")
for key, n in notes.items():
    if key not in vals:
        print(f"| {key[0]} | {key[1]} | {LABEL.get(key[2], key[2])} | 0 | – | – | – | {'; '.join(n[:4])} |")
print("\nstart: each value is a fresh process (REPS); the client polls every RETRY_MS ms, so "
      "'first proxied answer' is late by at most that plus one failed attempt. "
      "pool: 'tunnels_before' is the number of the client's TCP connections to the gateway when the "
      "request was sent (0 = the pool was cold; the request paid TCP + a resumed TLS handshake).")
