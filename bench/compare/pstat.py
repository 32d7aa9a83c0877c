#!/usr/bin/env python3
"""Contention guard for bench/compare.sh: CPU used by processes that are not ours.

  pstat.py snap FILE           record /proc/stat and every process's CPU ticks
  pstat.py diff A B ROOTPID    print "PCT top1:ticks,top2:ticks"

PCT is the CPU (in % of one core) used between snapshots A and B by everything that is
neither ROOTPID's process tree nor a kernel thread:

  foreign = busy ticks of all CPUs (user+nice+system from /proc/stat)
            - ticks of ROOTPID's tree (utime+stime of its live processes, plus the
              cutime+cstime its processes collected from children reaped in the window)
            - ticks of kernel threads (ksoftirqd, kworkers: they also serve our traffic)

Counting from /proc/stat also catches short-lived foreign processes (compiler jobs) that
start and exit between the snapshots. The top foreign processes are named from their
utime+stime deltas.
"""
import os
import sys
import time


def read_stat():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu "):
                v = [int(x) for x in line.split()[1:]]
                return v[0] + v[1] + v[2]  # user + nice + system (guest is inside user)
    return 0


def snap():
    out = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
        except OSError:
            continue
        r = s.rsplit(")", 1)[1].split()
        # ppid, starttime, utime+stime, cutime+cstime
        out[int(p)] = (int(r[1]), int(r[19]), int(r[11]) + int(r[12]), int(r[13]) + int(r[14]))
    return out


def load(fn):
    with open(fn) as f:
        t = float(f.readline())
        busy = int(f.readline())
        d = {}
        for line in f:
            k, pp, st, own, ch = map(int, line.split())
            d[k] = (pp, st, own, ch)
    return t, busy, d


if sys.argv[1] == "snap":
    busy = read_stat()
    d = snap()
    with open(sys.argv[2], "w") as f:
        f.write(f"{time.monotonic()}\n{busy}\n")
        for k, v in d.items():
            f.write(f"{k} {v[0]} {v[1]} {v[2]} {v[3]}\n")
    sys.exit(0)

t0, busy0, a = load(sys.argv[2])
t1, busy1, b = load(sys.argv[3])
root = int(sys.argv[4])


def mine(pid, d):
    for _ in range(64):
        if pid == root:
            return True
        if pid <= 1 or pid not in d:
            return False
        pid = d[pid][0]
    return False


def kthread(pid, d):
    return pid == 2 or d[pid][0] == 2


hz = os.sysconf("SC_CLK_TCK")
ours = kern = 0
who = []
for pid, (pp, st, own, ch) in b.items():
    prev = a.get(pid)
    same = prev is not None and prev[1] == st
    d_own = own - prev[2] if same else own
    d_ch = ch - prev[3] if same else ch
    if mine(pid, b) or mine(pid, a):
        ours += d_own + d_ch
    elif kthread(pid, b):
        kern += d_own
    elif d_own > 0:
        who.append((d_own, pid))
foreign = max(0, (busy1 - busy0) - ours - kern)
who.sort(reverse=True)
tops = []
for dt, pid in who[:2]:
    try:
        with open(f"/proc/{pid}/comm") as f:
            tops.append(f.read().strip() + f":{dt}")
    except OSError:
        tops.append(f"{pid}:{dt}")
print(f"{100.0 * foreign / hz / max(t1 - t0, 1e-3):.1f} {','.join(tops) or '-'}")
