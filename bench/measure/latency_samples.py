#!/usr/bin/env python3
"""One oha run (--output-format csv) -> a raw.tsv fragment for bench/latency.sh.

  latency_samples.py CSV RATE DUR WARMUP SAMPLES.gz

oha's CSV has one line per successful request, sorted by start:
request-start (s since oha's start), DNS, DNS+dialup, Response-delay, request-duration
(with --latency-correction: from the scheduled send time to the end), bytes, status.
Requests that started in the first WARMUP seconds are dropped (they include the
connection set-up of oha's CONNS connections). The remaining latencies (microseconds, in
schedule order) are written to SAMPLES.gz for pooling across rounds.

Prints (tab-separated): scheduled samples non200 p50_us p99_us max_us send_lag_p99_us
  scheduled   = RATE x (DUR - WARMUP), the requests the schedule had in the window
  samples     = 200 answers of 1024 bytes in the window (fewer than scheduled = errors or
                requests cut off by the deadline; see oha.err)
  send_lag    = actual send time - ideal schedule time (k / RATE) of the k-th request:
                timer slop plus waiting for a free connection; open-loop fidelity
Percentiles as oha computes them: sorted[floor(p x n)] (p99 of 300 = the 3rd worst).
"""
import gzip
import sys

csv_path, rate, dur, warm, out = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]


def pct(sorted_vals, p):
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(p * len(sorted_vals)))]


rows = []
with open(csv_path) as f:
    for line in f:
        parts = line.strip().split(",")
        if len(parts) != 7 or not parts[0][:1].isdigit():
            continue
        rows.append((float(parts[0]), float(parts[4]), int(parts[5]), int(parts[6])))
rows.sort()
lags = [start - k / rate for k, (start, _, _, _) in enumerate(rows)]
lat, non200 = [], 0
for (start, d, nbytes, status) in rows:
    if start < warm:
        continue
    if status != 200 or nbytes != 1024:
        non200 += 1
        continue
    lat.append(d * 1e6)
with gzip.open(out, "wt") as g:
    g.write("".join(f"{v:.1f}\n" for v in lat))
s = sorted(lat)
lg = sorted(lags[int(rate * warm):])
print("\t".join([
    str(int(rate * (dur - warm))), str(len(lat)), str(non200),
    f"{pct(s, 0.50):.0f}", f"{pct(s, 0.99):.0f}", f"{(s[-1] if s else float('nan')):.0f}",
    f"{pct(lg, 0.99) * 1e6:.0f}",
]))
