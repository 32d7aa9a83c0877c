#!/usr/bin/env python3
"""bench/tunnels.sh result.json -> summary.md (stdout) and raw.tsv rows (appended).

  tunnels_summary.py RESULT.json ENV.txt RAW.tsv FOREIGN_PCT [--foreign-max PCT]
"""
import json
import sys

res = json.load(open(sys.argv[1]))
env = open(sys.argv[2]).read().strip()
raw = sys.argv[3]
foreign = float(sys.argv[4] or 0)
fmax = float(sys.argv[sys.argv.index("--foreign-max") + 1]) if "--foreign-max" in sys.argv else 5.0
n = max(res["opened"], 1)
rss = res["rss_kib"]
per = {}
for side in ("client", "gateway"):
    k = f"{side}_rss_kib"
    per[side] = ((rss["traffic_end"][k] - rss["before"][k]) / n, (rss["opened"][k] - rss["before"][k]) / n)
rows = [
    ("tunnels_requested", res["n"], ""), ("tunnels_opened", res["opened"], f"in {res['open_s']} s"),
    ("tunnels_failed", res["open_failed"], json.dumps(res["open_errors"])[:300]),
    ("requests", res["requests"], f"in {res['traffic_s']} s"), ("bytes_verified", res["bytes_verified"], ""),
    ("mismatches", res["mismatches"] + res["open_mismatches"], "must be 0"),
    ("errors", res["errors"], json.dumps(res["error_kinds"])[:300]),
    ("requests_per_s", res["requests_per_s"], ""), ("mb_per_s", res["mb_per_s"], "verified body bytes"),
    ("tunnels_with_requests", res["tunnels_with_requests"], "tunnels that completed >= 1 request in the traffic phase"),
    ("req_per_tunnel_min", res["req_per_tunnel_min"], ""), ("req_per_tunnel_median", res["req_per_tunnel_median"], ""),
    ("req_per_tunnel_max", res["req_per_tunnel_max"], ""),
    ("max_gap_s_median", res["max_gap_s_median"], "per tunnel: longest time without a completed request"),
    ("max_gap_s_max", res["max_gap_s_max"], ""), ("still_open_at_end", res["still_open_at_end"], ""),
    ("client_rss_before_kib", rss["before"]["client_rss_kib"], ""), ("gateway_rss_before_kib", rss["before"]["gateway_rss_kib"], ""),
    ("client_rss_opened_kib", rss["opened"]["client_rss_kib"], ""), ("gateway_rss_opened_kib", rss["opened"]["gateway_rss_kib"], ""),
    ("client_rss_traffic_end_kib", rss["traffic_end"]["client_rss_kib"], ""),
    ("gateway_rss_traffic_end_kib", rss["traffic_end"]["gateway_rss_kib"], ""),
    ("client_rss_traffic_peak_kib", rss["traffic_peak"]["client_rss_kib"], ""),
    ("gateway_rss_traffic_peak_kib", rss["traffic_peak"]["gateway_rss_kib"], ""),
    ("client_kib_per_tunnel", round(per["client"][0], 2), "(RSS at end of traffic - before) / opened"),
    ("gateway_kib_per_tunnel", round(per["gateway"][0], 2), ""),
    ("client_kib_per_tunnel_opened", round(per["client"][1], 2),
     "(RSS 1 s after the open phase, before the traffic: each tunnel carried one request - before) / opened"),
    ("gateway_kib_per_tunnel_opened", round(per["gateway"][1], 2), ""),
    ("client_hwm_kib", res["hwm_kib"]["client"], ""), ("gateway_hwm_kib", res["hwm_kib"]["gateway"], ""),
    ("client_cpu_pct", res["cpu_pct_of_core"]["client"], "of one core, traffic phase"),
    ("gateway_cpu_pct", res["cpu_pct_of_core"]["gateway"], ""), ("driver_cpu_pct", res["cpu_pct_of_core"]["driver"], ""),
    ("client_cpu_us_per_req", res["cpu_us_per_request"]["client"], ""),
    ("gateway_cpu_us_per_req", res["cpu_us_per_request"]["gateway"], ""),
    ("foreign_cpu_pct", foreign, "other sessions' CPU during the run (one core = 100)"),
]
with open(raw, "a") as f:
    for k, v, note in rows:
        f.write(f"{k}\t{v}\t{note.replace(chr(9), ' ') or '-'}\n")

inst = len(res["ports"])
print("# 10,000 active CONNECT tunnels, bytes verified (bench/tunnels.sh)\n")
print("```\n" + env + "\n```\n")
if foreign >= fmax:
    print(f"**Contended:** other processes used {foreign:.1f} % of a core during the run. Not a record.\n")
ok = res["mismatches"] + res["open_mismatches"] == 0 and res["errors"] == 0 and res["open_failed"] == 0
print(f"**{res['opened']} of {res['n']} tunnels opened** ({res['open_failed']} failed) in {res['open_s']} s, "
      f"through {inst} client/gateway pair(s); all active for {res['traffic_s']} s: "
      f"**{res['requests']} requests, {res['bytes_verified']} body bytes verified, "
      f"{res['mismatches'] + res['open_mismatches']} mismatches, {res['errors']} errors** "
      f"({'clean' if ok else 'NOT clean'}).\n")
print("| figure | value |")
print("|---|---|")
for k, v, note in rows:
    print(f"| {k} | {v}{' — ' + note if note else ''} |")
drv = res["cpu_pct_of_core"]["driver"]
print()
if drv >= 90:
    print(f"The driver used {drv} % of its core: it, not msc, set the request rate; the throughput is a floor for msc.")
else:
    print(f"The driver used {drv} % of its core.")
print("Per-tunnel RSS = (RSS at the end of the traffic phase, tunnels still open - RSS before opening) / tunnels "
      "opened, summed over the client (resp. gateway) processes.")
