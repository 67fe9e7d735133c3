#!/usr/bin/python3
"""Deterministic generator of synthetic-but-realistic NovaCron training data.

Writes two raw CSV files (plain csv module, no pandas):

  metrics.csv    vm_id,timestamp,cpu,memory,disk_io,network_io,latency,error_rate,anomaly_type
                 one row per VM per minute, timestamp RFC 3339 UTC, rows ordered by VM then time.
                 Units: cpu and memory percent (0-100), disk_io MB/s, network_io Mbit/s,
                 latency ms, error_rate fraction (0-1). anomaly_type is "normal" or the kind of
                 injected anomaly (cpu_spike, memory_leak, network_flood, latency_spike,
                 error_burst, disk_thrash).
  placement.csv  workload_id,requirements.cpu,requirements.memory,node.cpu_available,
                 node.memory_available,outcome
                 one row per (workload, candidate node); cpu in cores, memory in GiB; outcome is a
                 simulated placement quality in [0, 1] (0 when the workload does not fit).

Same --seed and sizes, same bytes. Every VM draws from its own child random stream, so adding
VMs does not change the existing ones.

Usage: /usr/bin/python3 generate.py --out out/ [--seed 7] [--vms 200] [--days 3]
"""

import argparse
import csv
import datetime as dt
import math
import os
import sys
import time

import numpy as np

METRIC_COLUMNS = ["cpu", "memory", "disk_io", "network_io", "latency", "error_rate"]
METRICS_HEADER = ["vm_id", "timestamp"] + METRIC_COLUMNS + ["anomaly_type"]
PLACEMENT_HEADER = [
    "workload_id",
    "requirements.cpu",
    "requirements.memory",
    "node.cpu_available",
    "node.memory_available",
    "outcome",
]

ANOMALY_KINDS = ["cpu_spike", "memory_leak", "network_flood", "latency_spike", "error_burst", "disk_thrash"]

# Workload profiles and the share of VMs that run them.
PROFILES = [("web", 0.32), ("db", 0.18), ("batch", 0.15), ("stream", 0.15), ("idle", 0.20)]

START = dt.datetime(2025, 3, 3, 0, 0, 0, tzinfo=dt.timezone.utc)  # a Monday
MINUTES_PER_DAY = 1440
WARMUP_MINUTES = 30  # no anomalies and no missing cells in a VM's first minutes


# ----------------------------------------------------------------------------------------------
# Signal building blocks (all vectorized over the T minutes of one VM).


def ou_process(rng, n, tau, std, step=1):
    """Ornstein-Uhlenbeck (mean-reverting random walk) with time constant tau minutes and the
    given stationary std, sampled every `step` minutes and linearly interpolated to n points."""
    m = n // step + 2
    a = math.exp(-step / tau)
    eps = rng.normal(0.0, std * math.sqrt(1 - a * a), m)
    x = np.empty(m)
    x[0] = rng.normal(0.0, std)
    for i in range(1, m):
        x[i] = a * x[i - 1] + eps[i]
    if step == 1:
        return x[:n]
    return np.interp(np.arange(n), np.arange(m) * step, x)


def ar1(rng, n, rho, std):
    """AR(1) noise with stationary std (minute scale)."""
    eps = rng.normal(0.0, std * math.sqrt(1 - rho * rho), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, std)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + eps[i]
    return x


def daily_shape(t, peak_hour, sharpness, second_peak=0.0, second_hour=None):
    """A daily cycle in [0, 1]-ish: a raised cosine peaking at peak_hour, sharpened by
    `sharpness`, optionally with a second, smaller peak; mean removed by the caller."""
    day = (t % MINUTES_PER_DAY) / MINUTES_PER_DAY
    s = (0.5 * (1 + np.cos(2 * np.pi * (day - peak_hour / 24.0)))) ** sharpness
    if second_peak and second_hour is not None:
        s = s + second_peak * (0.5 * (1 + np.cos(2 * np.pi * (day - second_hour / 24.0)))) ** (sharpness * 2)
    return s


def weekly(t, phase, amp):
    """A slow weekly-ish drift: a 7-day sinusoid (weekends quieter for most profiles)."""
    return amp * np.sin(2 * np.pi * (t / (7 * MINUTES_PER_DAY)) + phase)


def bursts(rng, n, rate_per_hour, amp_range, plateau_range):
    """Normal traffic bursts: Poisson onsets, a 1-3 minute ramp, a plateau and a decay.
    Returns a multiplicative boost >= 0."""
    out = np.zeros(n)
    k = rng.poisson(rate_per_hour * n / 60.0)
    for _ in range(k):
        s = int(rng.integers(0, n))
        ramp = int(rng.integers(1, 4))
        plateau = int(rng.integers(plateau_range[0], plateau_range[1] + 1))
        decay = int(rng.integers(2, 8))
        amp = rng.uniform(*amp_range)
        shape = np.concatenate(
            [
                np.linspace(amp / ramp, amp, ramp),
                np.full(plateau, amp) * (1 + rng.normal(0, 0.05, plateau)),
                amp * np.exp(-np.arange(1, decay + 1) / (decay / 2.5)),
            ]
        )
        e = min(n, s + len(shape))
        out[s:e] += shape[: e - s]
    return out


# ----------------------------------------------------------------------------------------------
# Per-VM profile parameters.


def vm_params(rng, profile):
    p = {"profile": profile}
    u = rng.uniform
    if profile == "web":
        p.update(net=u(180, 420), net_amp=u(0.5, 1.1), peak=u(11, 17), sharp=u(1.0, 2.0),
                 second=u(0.0, 0.4), second_hour=u(19, 22), cpu_base=u(8, 18), cpu_per_100mbit=u(5, 10),
                 mem=u(38, 62), gc_amp=u(0, 6), disk=u(8, 30), lat=u(8, 18), err=u(0.002, 0.008),
                 burst_rate=u(0.15, 0.4), burst_amp=(0.25, 0.8), week_amp=u(0.05, 0.15))
    elif profile == "db":
        p.update(net=u(120, 320), net_amp=u(0.25, 0.6), peak=u(10, 16), sharp=u(1.0, 1.5),
                 second=0.0, second_hour=None, cpu_base=u(12, 25), cpu_per_100mbit=u(6, 12),
                 mem=u(68, 86), gc_amp=0.0, disk=u(50, 140), lat=u(4, 12), err=u(0.0005, 0.003),
                 burst_rate=u(0.05, 0.2), burst_amp=(0.2, 0.5), week_amp=u(0.04, 0.1))
    elif profile == "batch":
        p.update(net=u(50, 110), net_amp=u(0.05, 0.2), peak=u(0, 24), sharp=1.0, second=0.0,
                 second_hour=None, cpu_base=u(5, 15), cpu_per_100mbit=u(3, 6), mem=u(30, 55),
                 gc_amp=0.0, disk=u(5, 25), lat=u(15, 35), err=u(0.001, 0.005), burst_rate=u(0.02, 0.08),
                 burst_amp=(0.2, 0.6), week_amp=u(0.02, 0.08),
                 job_period=int(rng.choice([120, 180, 240, 360])), job_offset=int(rng.integers(0, 120)),
                 job_len=(25, 90), job_net=u(150, 450), job_cpu=u(55, 85), job_disk=u(120, 380))
    elif profile == "stream":
        p.update(net=u(380, 620), net_amp=u(0.35, 0.7), peak=u(19, 22), sharp=u(1.5, 2.5),
                 second=u(0.1, 0.3), second_hour=u(12, 14), cpu_base=u(10, 20), cpu_per_100mbit=u(4, 7),
                 mem=u(45, 65), gc_amp=u(0, 3), disk=u(20, 60), lat=u(10, 25), err=u(0.001, 0.006),
                 burst_rate=u(0.1, 0.3), burst_amp=(0.15, 0.45), week_amp=u(0.05, 0.15))
    else:  # idle
        p.update(net=u(50, 85), net_amp=u(0.05, 0.2), peak=u(8, 20), sharp=1.0, second=0.0,
                 second_hour=None, cpu_base=u(1.5, 5), cpu_per_100mbit=u(1, 3), mem=u(18, 40),
                 gc_amp=0.0, disk=u(0.5, 4), lat=u(3, 9), err=u(0.0, 0.002), burst_rate=u(0.02, 0.1),
                 burst_amp=(0.3, 1.0), week_amp=u(0.02, 0.08))
    p["capacity"] = u(1.6, 2.4) * p["net"] * (1 + p["net_amp"]) + 200  # link capacity, Mbit/s
    p["week_phase"] = u(0, 2 * math.pi)
    p["noise"] = u(0.03, 0.06)  # short-term multiplicative network noise (std)
    return p


def batch_jobs(rng, n, p):
    """0/1 (with soft edges) indicator of scheduled batch jobs: every job_period minutes, with
    start jitter and a random length."""
    ind = np.zeros(n)
    start = p["job_offset"]
    while start < n:
        s = start + int(rng.integers(-8, 9))
        length = int(rng.integers(p["job_len"][0], p["job_len"][1] + 1))
        s = max(0, s)
        e = min(n, s + length)
        if e > s:
            ramp = np.minimum(1.0, np.minimum(np.arange(1, e - s + 1), np.arange(e - s, 0, -1)) / 3.0)
            ind[s:e] = np.maximum(ind[s:e], ramp)
        start += p["job_period"]
    return ind


# ----------------------------------------------------------------------------------------------
# One VM.


def simulate_vm(rng, n, profile, anomaly_rate):
    p = vm_params(rng, profile)
    t = np.arange(n, dtype=np.float64)

    # Network: level x daily cycle x weekly drift x slow wander x short noise, plus bursts.
    shape = daily_shape(t, p["peak"], p["sharp"], p["second"], p["second_hour"])
    shape = shape / shape.mean()  # mean 1
    daily = 1 + p["net_amp"] * (shape - 1)
    daily = np.maximum(daily, 0.15)
    drift = 1 + weekly(t, p["week_phase"], p["week_amp"]) + ou_process(rng, n, tau=600, std=0.07, step=10)
    short = 1 + ar1(rng, n, rho=0.85, std=p["noise"]) + rng.normal(0, p["noise"] * 0.6, n)
    burst = bursts(rng, n, p["burst_rate"], p["burst_amp"], (3, 25))
    net = p["net"] * daily * np.maximum(drift, 0.4) * np.maximum(short, 0.5) * (1 + burst)

    jobs = np.zeros(n)
    if profile == "batch":
        jobs = batch_jobs(rng, n, p)
        net = net + jobs * p["job_net"] * (1 + ar1(rng, n, 0.9, 0.08))

    # CPU: driven by network (request handling), own daily load, batch jobs, noise.
    cpu = (p["cpu_base"] * (0.8 + 0.4 * shape / shape.max())
           + p["cpu_per_100mbit"] * net / 100.0
           + jobs * p.get("job_cpu", 0.0)
           + ar1(rng, n, 0.7, 2.0) + rng.normal(0, 1.0, n))

    # Memory: per-VM level, slow wander, small daily swell, optional GC sawtooth.
    mem = p["mem"] + ou_process(rng, n, tau=900, std=3.0, step=15) + 2.0 * (shape - 1) + rng.normal(0, 0.4, n)
    if p["gc_amp"] > 0:
        period = rng.uniform(20, 60)
        mem = mem + p["gc_amp"] * (((t + rng.uniform(0, period)) % period) / period - 0.5)
    mem = mem + jobs * rng.uniform(5, 15)

    # Disk: profile base following the daily cycle (and network for databases), bursty noise.
    disk = p["disk"] * (0.6 + 0.4 * shape) * np.exp(rng.normal(0, 0.25, n))
    if profile == "db":
        disk = disk + 0.15 * net * np.exp(rng.normal(0, 0.2, n))
    disk = disk + jobs * p.get("job_disk", 0.0) * np.exp(rng.normal(0, 0.15, n))

    anomaly = np.zeros(n, dtype=np.int8)  # 0 = normal, k+1 = ANOMALY_KINDS[k]
    net, cpu, mem, disk, lat_mult, err_add = inject_anomalies(rng, n, anomaly_rate, anomaly, net, cpu, mem, disk)

    cpu = np.clip(cpu, 0, 100)
    mem = np.clip(mem, 0, 100)
    disk = np.maximum(disk, 0.0)
    net = np.maximum(net, 0.5)

    # Latency: queueing on the link (utilization u), CPU saturation, log-normal noise.
    u = np.minimum(net / p["capacity"], 0.92)
    queue = 1 + 0.6 * u * u / (1 - u)
    cpu_sat = 1 + 2.5 * np.maximum(0, cpu - 80) / 20
    lat = p["lat"] * queue * cpu_sat * lat_mult * np.exp(ar1(rng, n, 0.6, 0.12) + rng.normal(0, 0.08, n))
    lat = 3000.0 * np.tanh(lat / 3000.0)  # requests time out at a few seconds

    # Errors: a small base rate, rising once latency passes ~150 ms, plus anomaly boosts.
    err = p["err"] * np.exp(rng.normal(0, 0.5, n)) + 0.02 * np.maximum(0, lat - 150) / 150 + err_add
    err = np.clip(err, 0, 1)

    return p, np.stack([cpu, mem, disk, net, lat, err], axis=1), anomaly


def inject_anomalies(rng, n, rate, label, net, cpu, mem, disk):
    """Injects non-overlapping anomaly episodes covering about `rate` of the minutes."""
    lat_mult = np.ones(n)
    err_add = np.zeros(n)
    mean_len = 9.0
    k = rng.poisson(rate * (n - WARMUP_MINUTES) / mean_len)
    starts = np.sort(rng.integers(WARMUP_MINUTES, max(WARMUP_MINUTES + 1, n - 5), k))
    busy_until = 0
    for s in starts:
        s = int(s)
        if s < busy_until + 10:
            continue
        kind = int(rng.integers(0, len(ANOMALY_KINDS)))
        name = ANOMALY_KINDS[kind]
        length = int(rng.integers(12, 31)) if name == "memory_leak" else int(rng.integers(3, 13))
        e = min(n, s + length)
        m = e - s
        if m <= 0:
            continue
        sl = slice(s, e)
        label[sl] = kind + 1
        busy_until = e
        if name == "cpu_spike":
            cpu[sl] = rng.uniform(88, 99) + rng.normal(0, 2.0, m)
            lat_mult[sl] *= rng.uniform(1.2, 1.8)
        elif name == "memory_leak":
            top = min(99.0, mem[s] + rng.uniform(20, 40))
            mem[sl] = np.linspace(mem[s], top, m) + rng.normal(0, 0.4, m)
            lat_mult[sl] *= np.linspace(1.0, rng.uniform(1.2, 2.0), m)
        elif name == "network_flood":
            f = rng.uniform(2.5, 5.0)
            net[sl] = net[sl] * f + rng.uniform(500, 1200)
            cpu[sl] = cpu[sl] + rng.uniform(12, 30)
            lat_mult[sl] *= rng.uniform(2.0, 5.0)
            err_add[sl] += rng.uniform(0.01, 0.06)
        elif name == "latency_spike":
            lat_mult[sl] *= rng.uniform(6, 25) * np.exp(rng.normal(0, 0.2, m))
            err_add[sl] += rng.uniform(0.0, 0.02)
        elif name == "error_burst":
            err_add[sl] += rng.uniform(0.08, 0.45) * np.exp(rng.normal(0, 0.2, m))
        elif name == "disk_thrash":
            disk[sl] = rng.uniform(450, 1400) * np.exp(rng.normal(0, 0.15, m))
            cpu[sl] = cpu[sl] + rng.uniform(5, 20)
            lat_mult[sl] *= rng.uniform(1.8, 4.0)
    return net, cpu, mem, disk, lat_mult, err_add


# ----------------------------------------------------------------------------------------------
# Files.


def write_metrics(path, seed, vms, minutes, anomaly_rate, missing_rate):
    ss = np.random.SeedSequence([seed, 1])
    children = ss.spawn(vms)
    profile_rng = np.random.default_rng(np.random.SeedSequence([seed, 2]))
    names = [p for p, _ in PROFILES]
    weights = np.array([w for _, w in PROFILES])
    profiles = profile_rng.choice(names, size=vms, p=weights / weights.sum())
    stamps = [(START + dt.timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(minutes)]
    kinds = ["normal"] + ANOMALY_KINDS
    fmts = ["%.2f", "%.2f", "%.3f", "%.2f", "%.2f", "%.5f"]
    counts = {k: 0 for k in kinds}
    missing = 0
    rows = 0
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(METRICS_HEADER)
        for v in range(vms):
            rng = np.random.default_rng(children[v])
            vm_id = "vm-%04d" % v
            _, vals, lab = simulate_vm(rng, minutes, str(profiles[v]), anomaly_rate)
            cols = [[fm % x for x in vals[:, j].tolist()] for j, fm in enumerate(fmts)]
            # A few empty cells, only in normal rows after the warm-up.
            cand = np.flatnonzero((lab == 0) & (np.arange(minutes) >= WARMUP_MINUTES))
            nmiss = rng.binomial(len(cand), missing_rate)
            for r in rng.choice(cand, size=nmiss, replace=False).tolist():
                cols[int(rng.integers(0, len(fmts)))][r] = ""
                missing += 1
            labels = [kinds[i] for i in lab.tolist()]
            for i in range(len(kinds)):
                counts[kinds[i]] += int((lab == i).sum())
            w.writerows(zip([vm_id] * minutes, stamps, *cols, labels))
            rows += minutes
            if (v + 1) % 50 == 0 or v + 1 == vms:
                print("  metrics: %d/%d VMs, %d rows" % (v + 1, vms, rows), flush=True)
    return rows, counts, missing, profiles


def write_placement(path, seed, rows, nodes_per_workload):
    rng = np.random.default_rng(np.random.SeedSequence([seed, 3]))
    nw = max(1, rows // nodes_per_workload)
    n = nw * nodes_per_workload
    # Workloads in arrival order: common VM sizes, memory by a GiB-per-core ratio.
    sizes = np.array([0.5, 1, 2, 4, 8, 16, 32])
    req_cpu = rng.choice(sizes, size=nw, p=[0.08, 0.18, 0.24, 0.22, 0.15, 0.09, 0.04])
    ratio = rng.choice([1, 2, 4, 8], size=nw, p=[0.15, 0.3, 0.4, 0.15])
    req_mem = np.clip(req_cpu * ratio * rng.choice([1.0, 1.0, 1.5], size=nw), 0.5, 128)
    # Candidate nodes: a mix of nearly full and roomy nodes; memory tracks cpu by the node's shape.
    full = rng.random(n) < 0.3
    cpu_av = np.where(full, rng.uniform(0, 10, n), rng.uniform(0, 64, n))
    shape = rng.choice([4, 8, 8, 16], size=n) * np.exp(rng.normal(0, 0.35, n))
    mem_av = np.clip(cpu_av * shape + rng.normal(0, 8, n), 0, 512)
    cpu_av = np.round(cpu_av, 2)
    mem_av = np.round(mem_av, 1)
    rc = np.repeat(req_cpu, nodes_per_workload)
    rm = np.repeat(req_mem, nodes_per_workload)
    outcome = placement_outcome(rng, rc, rm, cpu_av, mem_av)
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(PLACEMENT_HEADER)
        wid = np.repeat(np.arange(nw), nodes_per_workload)
        w.writerows(
            zip(
                ["w-%06d" % i for i in wid.tolist()],
                ["%g" % x for x in rc.tolist()],
                ["%g" % x for x in rm.tolist()],
                ["%g" % x for x in cpu_av.tolist()],
                ["%g" % x for x in mem_av.tolist()],
                ["%.4f" % x for x in outcome.tolist()],
            )
        )
    return n, float((outcome > 0).mean()), float(outcome.mean())


def placement_outcome(rng, rc, rm, ca, ma):
    """Simulated placement quality: 0 if the workload does not fit; otherwise better with more
    headroom left after placement, balanced between CPU and memory (nothing stranded), and
    worse when the fit is tight relative to the workload's own size. Noise on top."""
    fits = (rc <= ca) & (rm <= ma)
    fc = np.maximum(ca - rc, 0) / 64.0  # headroom left, as a fraction of a standard node
    fm = np.maximum(ma - rm, 0) / 512.0
    headroom = 1 - np.exp(-6 * np.minimum(fc, fm) - 2 * np.maximum(fc, fm))
    imbalance = np.minimum(1.0, 2.5 * np.abs(fc - fm))
    slack = np.minimum((ca - rc) / rc, (ma - rm) / rm)
    tight = np.clip((0.3 - slack) / 0.3, 0, 1)
    q = 0.2 + 0.5 * headroom + 0.3 * (1 - imbalance) - 0.35 * tight + rng.normal(0, 0.04, len(rc))
    return np.where(fits, np.clip(q, 0.01, 1.0), 0.0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--vms", type=int, default=200, help="number of VMs (default 200)")
    ap.add_argument("--days", type=float, default=3.0, help="days of one-minute samples per VM (default 3)")
    ap.add_argument("--anomaly-rate", type=float, default=0.03, help="share of minutes inside anomaly episodes")
    ap.add_argument("--missing-rate", type=float, default=0.0005,
                    help="share of normal rows with one empty metric cell (default 0.0005; 0 disables)")
    ap.add_argument("--placement-rows", type=int, default=200000)
    ap.add_argument("--nodes-per-workload", type=int, default=10)
    args = ap.parse_args(argv)

    minutes = int(round(args.days * MINUTES_PER_DAY))
    if args.vms * minutes > 2_000_000:
        ap.error("vms x minutes = %d rows; keep it under 2M" % (args.vms * minutes))
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    mpath = os.path.join(args.out, "metrics.csv")
    print("generate: %d VMs x %d minutes, seed %d -> %s" % (args.vms, minutes, args.seed, mpath), flush=True)
    rows, counts, missing, profiles = write_metrics(mpath, args.seed, args.vms, minutes, args.anomaly_rate, args.missing_rate)
    anomalous = rows - counts["normal"]
    print("  metrics: %d rows, %d anomalous (%.2f%%), %d empty cells (%.4f%% of metric cells)"
          % (rows, anomalous, 100.0 * anomalous / rows, missing, 100.0 * missing / (rows * 6)), flush=True)
    print("  anomaly rows by kind: " + ", ".join("%s=%d" % (k, counts[k]) for k in ANOMALY_KINDS), flush=True)
    uniq, cnt = np.unique(profiles, return_counts=True)
    print("  VM profiles: " + ", ".join("%s=%d" % (u, c) for u, c in zip(uniq.tolist(), cnt.tolist())), flush=True)
    ppath = os.path.join(args.out, "placement.csv")
    n, fit, mean = write_placement(ppath, args.seed, args.placement_rows, args.nodes_per_workload)
    print("  placement: %d rows -> %s (%.1f%% fit, mean outcome %.3f)" % (n, ppath, 100 * fit, mean), flush=True)
    print("generate: done in %.1fs" % (time.time() - t0), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
