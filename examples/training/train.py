#!/usr/bin/python3
"""Trains the three example models from the matrices `sidecar features transform` wrote, and
exports them as ONNX (opset 17) with the spec fingerprint in metadata_props.

Inputs (in --data, default ./out):
  bandwidth.features.csv (+ .meta.json)  sequence spec: vm_id,timestamp,t0.cpu..t9.error_rate,
                                          label.network_io+1..+10 (raw Mbit/s)
  anomaly.features.csv   (+ .meta.json)  vm_id,timestamp,cpu..error_rate,label.anomaly_type
  placement.features.csv (+ .meta.json)  req_cpu,req_memory,cpu_available,memory_available,
                                          label.outcome
This script never computes features: every input value is read from those matrices, which the
sidecar's own Go code produced from the same spec it uses online.

Outputs (in --models, default ../models): bandwidth.onnx, anomaly.onnx, placement.onnx, METRICS.md.

Usage: /usr/bin/python3 train.py [--data out] [--models ../models] [--seed 7] [--only bandwidth,...]
"""

import argparse
import datetime as dt
import io
import itertools
import json
import math
import os
import sys
import time

# Debian's torch calls the system BLAS (libblas.so.3; OpenBLAS when libopenblas0-pthread is
# installed) for matrix products and OpenMP for the rest. Keep OpenBLAS's pool at torch's size and
# let idle OpenMP threads sleep instead of spinning: on 2 cores, spinning OpenMP workers starve
# the BLAS threads (measured: 10x slower LSTM steps). Must be set before numpy/torch load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import version  # noqa: E402
HELDOUT_FRACTION = 0.2
MODEL_VERSION = "1.0.0"


def log(msg):
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# Reading matrices.


class Matrix:
    """One feature matrix: its meta.json, header, leading key columns (strings), numeric
    columns (float32, NaN for empty cells) and trailing text columns."""

    def __init__(self, meta, header, keys, values, texts, value_names, text_names):
        self.meta = meta
        self.header = header
        self.keys = keys  # dict name -> list[str]
        self.values = values  # np.ndarray [rows, len(value_names)] float32
        self.texts = texts  # dict name -> list[str]
        self.value_names = value_names
        self.text_names = text_names
        self.rows = values.shape[0]

    def cols(self, names):
        idx = {n: i for i, n in enumerate(self.value_names)}
        missing = [n for n in names if n not in idx]
        if missing:
            raise SystemExit("matrix of spec %s has no column(s) %s" % (self.meta["spec"], ", ".join(missing)))
        return self.values[:, [idx[n] for n in names]]


def load_matrix(path, spec, key_cols=(), text_cols=()):
    """Reads a matrix CSV and checks it against its meta.json. Columns named in key_cols must
    lead the header and text_cols must end it; everything between is parsed as float32 (empty
    cells, e.g. a label beyond a gap in the raw data, become NaN). Blocks of lines go through
    numpy's C parser, so ~1M rows x 70 columns take ~20 s."""
    mpath = path + ".meta.json"
    if not os.path.exists(path) or not os.path.exists(mpath):
        raise SystemExit("missing %s or its .meta.json: run `sidecar features transform` first (see run.sh)" % path)
    with open(mpath) as f:
        meta = json.load(f)
    if meta.get("spec") != spec:
        raise SystemExit("%s: meta.json says spec %r, expected %r" % (mpath, meta.get("spec"), spec))
    fp = meta.get("fingerprint", "")
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise SystemExit("%s: fingerprint %r is not a sha256 hex digest" % (mpath, fp))
    nk, nt = len(key_cols), len(text_cols)
    t0 = time.time()
    keys = {k: [] for k in key_cols}
    texts = {k: [] for k in text_cols}
    blocks = []
    with open(path) as f:
        header = f.readline().rstrip("\r\n").split(",")
        if header != meta["columns"]:
            raise SystemExit("%s: header differs from the columns in its meta.json" % path)
        if tuple(header[:nk]) != tuple(key_cols) or (nt and tuple(header[-nt:]) != tuple(text_cols)):
            raise SystemExit("%s: expected leading columns %s and trailing %s, header is %s..."
                             % (path, key_cols, text_cols, header[:4]))
        value_names = header[nk:len(header) - nt]
        while True:
            lines = list(itertools.islice(f, 100000))
            if not lines:
                break
            body = []
            for line in lines:
                line = line.rstrip("\r\n")
                if nk:
                    parts = line.split(",", nk)
                    for k, v in zip(key_cols, parts[:nk]):
                        keys[k].append(v)
                    line = parts[nk]
                if nt:
                    parts = line.rsplit(",", nt)
                    for k, v in zip(text_cols, parts[1:]):
                        texts[k].append(v)
                    line = parts[0]
                body.append(line)
            txt = "\n" + "\n".join(body) + "\n"
            # Empty cells -> nan (twice: the first pass cannot see overlapping ",,,").
            txt = txt.replace(",,", ",nan,").replace(",,", ",nan,").replace(",\n", ",nan\n").replace("\n,", "\nnan,")
            blocks.append(np.loadtxt(io.StringIO(txt), delimiter=",", dtype=np.float32, ndmin=2))
    values = np.concatenate(blocks) if blocks else np.zeros((0, len(value_names)), np.float32)
    if values.shape[1] != len(value_names):
        raise SystemExit("%s: parsed %d numeric columns, expected %d" % (path, values.shape[1], len(value_names)))
    if meta.get("rows") is not None and meta["rows"] != values.shape[0]:
        raise SystemExit("%s: %d rows, its meta.json says %d" % (path, values.shape[0], meta["rows"]))
    log("  read %s: %d rows x %d columns in %.1fs" % (os.path.basename(path), values.shape[0], len(header), time.time() - t0))
    return Matrix(meta, header, keys, values, texts, value_names, text_cols)


def epoch_seconds(stamps):
    """RFC 3339 UTC timestamps -> int64 seconds."""
    s = np.array([x[:-1] if x.endswith("Z") else x for x in stamps], dtype="datetime64[s]")
    return s.astype(np.int64)


def time_split(entities, seconds, fraction=HELDOUT_FRACTION, gap_seconds=0):
    """Time-based held-out split per entity: the last `fraction` of each entity's time span is
    held out; training rows end `gap_seconds` before it (so no training label looks into the
    held-out period). Never shuffled across the split."""
    ent = np.asarray(entities)
    uniq, inv = np.unique(ent, return_inverse=True)
    tmin = np.full(len(uniq), np.iinfo(np.int64).max)
    tmax = np.full(len(uniq), np.iinfo(np.int64).min)
    np.minimum.at(tmin, inv, seconds)
    np.maximum.at(tmax, inv, seconds)
    cutoff = tmin + (1 - fraction) * (tmax - tmin)
    c = cutoff[inv]
    test = seconds > c
    train = seconds + gap_seconds <= c
    return train, test


# ----------------------------------------------------------------------------------------------
# Training helpers.


def set_seed(seed):
    np.random.seed(seed)
    torch.manual_seed(seed)


def batches(n, batch_size, gen, shuffle=True):
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    for i in range(0, n, batch_size):
        yield order[i:i + batch_size]


@torch.no_grad()
def predict(fn, x, batch_size=8192):
    outs = []
    for i in range(0, x.shape[0], batch_size):
        outs.append(fn(x[i:i + batch_size]))
    if isinstance(outs[0], tuple):
        return tuple(torch.cat([o[k] for o in outs]) for k in range(len(outs[0])))
    return torch.cat(outs)


def export_onnx(module, example, path, input_shape_desc, output_names, metadata, golden_dir):
    """torch.onnx.export (opset 17, dynamic batch axis "N" on every input and output), then
    metadata_props via the onnx package, then onnx.checker. Also writes golden_dir/<model>.golden.json:
    8 held-out input rows and torch's outputs for them, to check any runtime against."""
    module.eval()
    dyn = {"features": {0: "N"}}
    for o in output_names:
        dyn[o] = {0: "N"}
    torch.onnx.export(module, (example,), path, opset_version=17, input_names=["features"],
                      output_names=list(output_names), dynamic_axes=dyn, do_constant_folding=True)
    m = onnx.load(path)
    del m.metadata_props[:]
    for k, v in metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, str(v)
    m.producer_name = "novacron-sidecar examples/training/train.py"
    m.doc_string = "%s; input features %s float32; outputs %s" % (metadata["novacron.model_version"], input_shape_desc, ", ".join(output_names))
    metadata["novacron.model_version"] = version.stamp(m)  # with the weights' digest: a retrained model gets a new version
    log("  version %s" % metadata["novacron.model_version"])
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    # Re-read and confirm the declared shapes: the batch axis must be symbolic "N".
    m = onnx.load(path)
    onnx.checker.check_model(path)
    for vi in list(m.graph.input) + list(m.graph.output):
        d0 = vi.type.tensor_type.shape.dim[0]
        if d0.dim_param != "N":
            raise SystemExit("%s: %s has batch dim %r, want symbolic N" % (path, vi.name, d0))
    log("  exported %s (%d bytes), onnx.checker ok: inputs %s, outputs %s" % (
        os.path.relpath(path), os.path.getsize(path),
        [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]) for i in m.graph.input],
        [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in m.graph.output]))
    write_golden(os.path.join(golden_dir, os.path.basename(path).replace(".onnx", ".golden.json")),
                 module, example[:8], output_names)
    maybe_check_with_ort(path, module, example)


def write_golden(path, module, x, output_names):
    with torch.no_grad():
        out = module(x)
    out = out if isinstance(out, tuple) else (out,)
    doc = {
        "input": {"name": "features", "shape": list(x.shape), "data": [float(v) for v in x.numpy().ravel()]},
        "outputs": {n: {"shape": list(o.shape), "data": [float(v) for v in o.numpy().ravel()]} for n, o in zip(output_names, out)},
    }
    with open(path, "w") as f:
        json.dump(doc, f)


def maybe_check_with_ort(path, module, example):
    """If the onnxruntime Python package happens to be installed, compare its outputs with
    torch's on the example batch. (Debian ships no onnxruntime; the sidecar's Go tests load
    these files with ONNX Runtime.)"""
    try:
        import onnxruntime as ort  # noqa: F401
    except Exception:
        return
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"features": example.numpy()})
    with torch.no_grad():
        want = module(example)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        err = float(np.max(np.abs(g - w.numpy())))
        if err > 1e-3 * (1 + float(np.max(np.abs(w.numpy())))):
            raise SystemExit("%s: onnxruntime differs from torch by %g" % (path, err))
    log("  onnxruntime agrees with torch on %d rows" % example.shape[0])


def base_metadata(meta, kind, arch, seed, extra):
    fp = meta["fingerprint"]
    md = {
        "novacron.spec_fingerprint": fp,
        "novacron.spec_name": meta["spec"],
        "novacron.model_version": "%s-%s-%s+%s" % (kind, arch, MODEL_VERSION, fp[:8]),
        "novacron.features": ",".join(meta["features"]),
        "novacron.window": str(meta.get("window", 1)),
        "novacron.train_seed": str(seed),
    }
    md.update(extra)
    return md


# ----------------------------------------------------------------------------------------------
# (a) Bandwidth: LSTM over [N, window, features] -> forecast and sigma in Mbit/s.


class BandwidthNet(nn.Module):
    """LSTM encoder, an MLP head for the mean and log-scale of each horizon step, and a linear
    skip from the last step (so persistence is easy to learn). Works in normalized target units."""

    def __init__(self, n_features, hidden, horizon):
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(hidden + n_features, 128), nn.ReLU(), nn.Linear(128, 2 * horizon))
        self.skip = nn.Linear(n_features, horizon)
        self.horizon = horizon

    def forward(self, x):
        x = torch.clamp(x, -12.0, 12.0)  # heavy-tailed z-scores (anomalies) stay bounded
        out, _ = self.lstm(x)
        last = x[:, -1, :]
        z = self.head(torch.cat([out[:, -1, :], last], dim=1))
        mu = z[:, : self.horizon] + self.skip(last)
        s = F.softplus(z[:, self.horizon:]) + 1e-3
        return mu, s


class BandwidthExport(nn.Module):
    """Serving graph: the target normalization is baked in; outputs are in Mbit/s."""

    def __init__(self, net, y_mean, y_std):
        super().__init__()
        self.net = net
        self.register_buffer("y_mean", torch.tensor(float(y_mean)))
        self.register_buffer("y_std", torch.tensor(float(y_std)))

    def forward(self, features):
        mu, s = self.net(features)
        forecast = torch.relu(mu * self.y_std + self.y_mean)  # bandwidth is never negative
        sigma = s * self.y_std
        return forecast, sigma


def regression_metrics(y, yhat):
    """y, yhat: float64 arrays, NaN in y = no label (ignored)."""
    m = ~np.isnan(y)
    yy, pp = y[m], yhat[m]
    ae = np.abs(yy - pp)
    wape = ae.sum() / np.abs(yy).sum()
    within = np.mean(ae <= 0.2 * np.abs(yy))
    return {"pba": 1 - wape, "wape": wape, "mae": ae.mean(), "within20": within, "cells": int(m.sum())}


def train_bandwidth(mat, args, out_dir, results):
    meta = mat.meta
    feats = meta["features"]
    window = int(meta["window"])
    xcols = ["t%d.%s" % (t, f) for t in range(window) for f in feats]
    ycols = sorted([c for c in mat.value_names if c.startswith("label.network_io+")], key=lambda c: int(c.split("+")[1]))
    horizon = len(ycols)
    if horizon == 0:
        raise SystemExit("bandwidth matrix has no label.network_io+k columns")
    X = mat.cols(xcols).reshape(-1, window, len(feats))
    Y = mat.cols(ycols).astype(np.float64)
    secs = epoch_seconds(mat.keys["timestamp"])
    tr, te = time_split(mat.keys["vm_id"], secs, gap_seconds=60 * horizon)
    tr &= ~np.isnan(Y).any(axis=1)  # windows whose future has a gap are not trained on
    log("  split: %d train windows, %d held-out windows (last %d%% of each VM's time, %d-min gap)"
        % (tr.sum(), te.sum(), int(HELDOUT_FRACTION * 100), horizon))

    y_mean = float(Y[tr].mean())
    y_std = float(Y[tr].std())
    Xtr = torch.from_numpy(np.ascontiguousarray(X[tr]))
    Ytr = torch.from_numpy(((Y[tr] - y_mean) / y_std).astype(np.float32))
    Xte = torch.from_numpy(np.ascontiguousarray(X[te]))
    Yte = Y[te]

    # Reference: a ridge regression on the same 60 inputs (a strong linear baseline that
    # includes persistence and trend extrapolation).
    A = X[tr].reshape(tr.sum(), -1).astype(np.float64)
    A = np.hstack([A, np.ones((A.shape[0], 1))])
    W = np.linalg.solve(A.T @ A + 1.0 * np.eye(A.shape[1]), A.T @ Y[tr])
    B = np.hstack([X[te].reshape(te.sum(), -1).astype(np.float64), np.ones((te.sum(), 1))])
    ridge = regression_metrics(Yte, np.maximum(B @ W, 0))
    log("  ridge baseline: PBA %.4f, MAE %.2f Mbit/s" % (ridge["pba"], ridge["mae"]))

    set_seed(args.seed)
    net = BandwidthNet(len(feats), args.bw_hidden, horizon)
    opt = torch.optim.Adam(net.parameters(), lr=args.bw_lr)
    epochs = args.bw_epochs
    per_epoch = min(args.bw_samples, Xtr.shape[0])
    steps = epochs * math.ceil(per_epoch / args.bw_batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.bw_lr, total_steps=steps, pct_start=0.15)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for ep in range(epochs):
        net.train()
        idx = torch.randperm(Xtr.shape[0], generator=gen)[:per_epoch]
        tot_l1 = tot_nll = 0.0
        nb = 0
        for b in batches(per_epoch, args.bw_batch, gen):
            bi = idx[b]
            xb, yb = Xtr[bi], Ytr[bi]
            mu, s = net(xb)
            # Mean: L1 (the PBA metric is an L1 metric). Spread: Gaussian NLL around the
            # (detached) mean, so sigma is a calibrated std-dev of that forecast's error.
            l1 = (mu - yb).abs().mean()
            nll = F.gaussian_nll_loss(mu.detach(), yb, s * s, full=False, eps=1e-6)
            loss = l1 + 0.5 * nll
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            sched.step()
            tot_l1 += float(l1)
            tot_nll += float(nll)
            nb += 1
        net.eval()
        msg = ""
        if ep == epochs - 1 or args.verbose:
            mu, _ = predict(net, Xte)
            m = regression_metrics(Yte, np.maximum(mu.double().numpy() * y_std + y_mean, 0))
            msg = ", held-out PBA %.4f MAE %.2f" % (m["pba"], m["mae"])
        log("  bandwidth epoch %d/%d: train L1 %.4f NLL %.4f (%.0fs)%s"
            % (ep + 1, epochs, tot_l1 / nb, tot_nll / nb, time.time() - t0, msg))

    export = BandwidthExport(net, y_mean, y_std).eval()
    fc, sg = predict(export, Xte)
    fc = fc.double().numpy()
    sg = sg.double().numpy()
    m = regression_metrics(Yte, fc)
    lab = ~np.isnan(Yte)
    z = np.abs(Yte[lab] - fc[lab]) / sg[lab]
    cover90 = float(np.mean(z <= 1.6449))
    scale = float(np.median(np.abs(Yte[lab])))
    conf = 1.0 / (1.0 + sg.mean(axis=1) / scale)
    n_te = int(te.sum())
    log("  bandwidth held-out: PBA (1-WAPE) %.4f, MAE %.2f Mbit/s, within +-20%% %.4f, "
        "90%% interval coverage %.3f, median label %.1f, mean confidence %.3f"
        % (m["pba"], m["mae"], m["within20"], cover90, scale, conf.mean()))
    per_h = [regression_metrics(Yte[:, h], fc[:, h])["pba"] for h in range(horizon)]
    log("  PBA by horizon step: " + " ".join("+%d:%.3f" % (h + 1, p) for h, p in enumerate(per_h)))

    md = base_metadata(meta, "bandwidth", "lstm", args.seed, {
        "novacron.horizon_minutes": str(horizon),
        "novacron.confidence_scale": "%.6g" % scale,
        "novacron.confidence_formula": "1/(1+mean(sigma)/confidence_scale)",
        "novacron.target": "network_io",
        "novacron.output_units": "Mbit/s",
        "novacron.lstm_hidden": str(args.bw_hidden),
        "novacron.heldout_pba": "%.4f" % m["pba"],
    })
    path = os.path.join(out_dir, "bandwidth.onnx")
    export_onnx(export, Xte[:64].clone(), path, "[N,%d,%d]" % (window, len(feats)), ("forecast", "sigma"), md, args.data)
    results += [
        ("bandwidth", "PBA accuracy (1 - WAPE)", "%.4f" % m["pba"], n_te),
        ("bandwidth", "MAE (Mbit/s)", "%.2f" % m["mae"], n_te),
        ("bandwidth", "share within ±20%", "%.4f" % m["within20"], n_te),
        ("bandwidth", "90% interval coverage (±1.645σ)", "%.4f" % cover90, n_te),
        ("bandwidth", "PBA at +1 min / +10 min", "%.4f / %.4f" % (per_h[0], per_h[-1]), n_te),
        ("bandwidth", "ridge baseline PBA (same inputs)", "%.4f" % ridge["pba"], n_te),
        ("bandwidth", "confidence_scale (held-out median label, Mbit/s)", "%.2f" % scale, n_te),
    ]


# ----------------------------------------------------------------------------------------------
# (b) Anomaly: MLP over [N, features] -> probs [N, K], class 0 = normal.


class MLP(nn.Module):
    def __init__(self, n_in, hidden, n_out, clamp=12.0):
        super().__init__()
        self.clamp = clamp
        self.net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_out))

    def forward(self, x):
        return self.net(torch.clamp(x, -self.clamp, self.clamp))


class SoftmaxExport(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, features):
        return torch.softmax(self.net(features), dim=1)


def train_anomaly(mat, args, out_dir, results):
    meta = mat.meta
    feats = meta["features"]
    X = mat.cols(feats)
    labels_txt = np.array(mat.texts["label.anomaly_type"])
    kinds = sorted(set(labels_txt.tolist()) - {"normal"})
    classes = ["normal"] + kinds
    cidx = {c: i for i, c in enumerate(classes)}
    y = np.array([cidx[v] for v in labels_txt.tolist()], dtype=np.int64)
    secs = epoch_seconds(mat.keys["timestamp"])
    tr, te = time_split(mat.keys["vm_id"], secs)
    log("  split: %d train rows, %d held-out rows; classes %s" % (tr.sum(), te.sum(), classes))

    counts = np.bincount(y[tr], minlength=len(classes)).astype(np.float64)
    weights = (counts.sum() / np.maximum(counts, 1)) ** 0.25  # mildly tempered inverse frequency
    weights = weights / weights[0]
    set_seed(args.seed)
    net = MLP(len(feats), args.anomaly_hidden, len(classes))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    Xtr, ytr = torch.from_numpy(np.ascontiguousarray(X[tr])), torch.from_numpy(y[tr])
    Xte, yte = torch.from_numpy(np.ascontiguousarray(X[te])), y[te]
    wt = torch.tensor(weights, dtype=torch.float32)
    gen = torch.Generator().manual_seed(args.seed + 1)
    steps = args.anomaly_epochs * math.ceil(Xtr.shape[0] / 1024)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for ep in range(args.anomaly_epochs):
        net.train()
        tot, nb = 0.0, 0
        for b in batches(Xtr.shape[0], 1024, gen):
            loss = F.cross_entropy(net(Xtr[b]), ytr[b], weight=wt)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss)
            nb += 1
        log("  anomaly epoch %d/%d: train loss %.4f (%.0fs)" % (ep + 1, args.anomaly_epochs, tot / nb, time.time() - t0))

    export = SoftmaxExport(net).eval()
    probs = predict(export, Xte).numpy()
    pred = probs.argmax(axis=1)
    acc = float(np.mean(pred == yte))
    true_a, pred_a = yte != 0, pred != 0
    tp = float(np.sum(true_a & pred_a))
    recall = tp / max(1, true_a.sum())
    precision = tp / max(1, pred_a.sum())
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    n_te = int(te.sum())
    log("  anomaly held-out: accuracy %.4f, anomaly recall %.4f, precision %.4f, F1 %.4f"
        % (acc, recall, precision, f1))
    results += [
        ("anomaly", "accuracy (%d classes)" % len(classes), "%.4f" % acc, n_te),
        ("anomaly", "anomaly recall (any type flagged)", "%.4f" % recall, n_te),
        ("anomaly", "anomaly precision", "%.4f" % precision, n_te),
        ("anomaly", "anomaly F1", "%.4f" % f1, n_te),
    ]
    for i, c in enumerate(classes):
        m = yte == i
        if m.sum() == 0:
            continue
        r_exact = float(np.mean(pred[m] == i))
        r_flag = float(np.mean(pred[m] != 0)) if i else float(np.mean(pred[m] == 0))
        log("    %-14s rows %6d  recall (exact type) %.4f  %s %.4f"
            % (c, m.sum(), r_exact, "flagged" if i else "kept normal", r_flag))
        if i:
            results.append(("anomaly", "recall: %s (exact type / flagged)" % c, "%.4f / %.4f" % (r_exact, r_flag), int(m.sum())))

    md = base_metadata(meta, "anomaly", "mlp", args.seed, {
        "novacron.labels": ",".join(classes),
        "novacron.normal_class": "0",
        "novacron.heldout_accuracy": "%.4f" % acc,
    })
    export_onnx(export, Xte[:64].clone(), os.path.join(out_dir, "anomaly.onnx"), "[N,%d]" % len(feats), ("probs",), md, args.data)


# ----------------------------------------------------------------------------------------------
# (c) Placement: MLP over [N, 4] -> score [N, 1] in [0, 1].


class SigmoidExport(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, features):
        return torch.sigmoid(self.net(features))


def placement_groups(req):
    """The placement spec has no entity column, so the matrix keeps input order, where a
    workload's candidate nodes are consecutive rows with the same requirements. Returns a group
    id per row (a run of equal requirement rows)."""
    change = np.any(req[1:] != req[:-1], axis=1)
    return np.concatenate([[0], np.cumsum(change)])


def pairwise_accuracy(groups, y, p, rng, max_pairs=200000):
    """Random pairs of candidate nodes of the same workload whose outcomes differ: the share the
    model orders like the outcome (ties in the prediction count half)."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.flatnonzero(np.concatenate([[True], g[1:] != g[:-1]]))
    ends = np.concatenate([starts[1:], [len(g)]])
    sizes = ends - starts
    ok = sizes >= 2
    starts, sizes = starts[ok], sizes[ok]
    k = rng.integers(0, len(starts), max_pairs)
    a = starts[k] + (rng.random(max_pairs) * sizes[k]).astype(np.int64)
    b = starts[k] + (rng.random(max_pairs) * sizes[k]).astype(np.int64)
    a, b = order[a], order[b]
    dy = y[a] - y[b]
    keep = (a != b) & (np.abs(dy) > 1e-6)
    dy, dp = dy[keep], (p[a] - p[b])[keep]
    correct = np.where(dp == 0, 0.5, (np.sign(dp) == np.sign(dy)).astype(np.float64))
    return float(correct.mean()), int(keep.sum())


def train_placement(mat, args, out_dir, results):
    meta = mat.meta
    feats = meta["features"]
    X = mat.cols(feats)
    y = mat.cols(["label.outcome"])[:, 0].astype(np.float64)
    if np.isnan(y).any():
        raise SystemExit("placement matrix has empty outcomes")
    groups = placement_groups(mat.cols(["req_cpu", "req_memory"]))
    # Hold out the last 20% of workloads (arrival order), cut at a workload boundary.
    cut_row = int(len(y) * (1 - HELDOUT_FRACTION))
    cut_group = groups[cut_row]
    tr, te = groups < cut_group, groups >= cut_group
    log("  split: %d train rows, %d held-out rows (last %d%% of workloads in arrival order)"
        % (tr.sum(), te.sum(), int(HELDOUT_FRACTION * 100)))
    set_seed(args.seed)
    net = MLP(len(feats), args.placement_hidden, 1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    Xtr = torch.from_numpy(np.ascontiguousarray(X[tr]))
    ytr = torch.from_numpy(y[tr].astype(np.float32)).unsqueeze(1)
    Xte = torch.from_numpy(np.ascontiguousarray(X[te]))
    gen = torch.Generator().manual_seed(args.seed + 2)
    steps = args.placement_epochs * math.ceil(Xtr.shape[0] / 512)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for ep in range(args.placement_epochs):
        net.train()
        tot, nb = 0.0, 0
        for b in batches(Xtr.shape[0], 512, gen):
            # Soft-target binary cross-entropy: outcome in [0, 1] is the target probability.
            loss = F.binary_cross_entropy_with_logits(net(Xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss)
            nb += 1
        log("  placement epoch %d/%d: train loss %.4f (%.0fs)" % (ep + 1, args.placement_epochs, tot / nb, time.time() - t0))
    export = SigmoidExport(net).eval()
    p = predict(export, Xte).numpy()[:, 0].astype(np.float64)
    yte = y[te]
    mae = float(np.mean(np.abs(p - yte)))
    rank, pairs = pairwise_accuracy(groups[te], yte, p, np.random.default_rng(args.seed))
    fit = yte > 0
    rank_fit, pairs_fit = pairwise_accuracy(groups[te][fit], yte[fit], p[fit], np.random.default_rng(args.seed))
    n_te = int(te.sum())
    log("  placement held-out: MAE %.4f, pairwise ranking accuracy %.4f (%d pairs), among fitting nodes %.4f (%d pairs)"
        % (mae, rank, pairs, rank_fit, pairs_fit))
    results += [
        ("placement", "MAE (outcome, 0-1)", "%.4f" % mae, n_te),
        ("placement", "pairwise ranking accuracy (same workload)", "%.4f" % rank, n_te),
        ("placement", "pairwise ranking accuracy, fitting nodes only", "%.4f" % rank_fit, n_te),
    ]
    md = base_metadata(meta, "placement", "mlp", args.seed, {
        "novacron.score_range": "0,1",
        "novacron.heldout_mae": "%.4f" % mae,
    })
    export_onnx(export, Xte[:64].clone(), os.path.join(out_dir, "placement.onnx"), "[N,%d]" % len(feats), ("score",), md, args.data)


# ----------------------------------------------------------------------------------------------


def write_metrics_md(path, results, seed, data_seed, elapsed):
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        "# Example model metrics",
        "",
        "Written by `examples/training/train.py` on the time-based held-out split (the last 20% of",
        "each VM's time; for placement the last 20% of workloads). Definitions are in",
        "`examples/training/README.md`. Regenerate with `examples/training/run.sh`.",
        "",
        "| model | metric | value | held-out rows | date | seed |",
        "|---|---|---|---|---|---|",
    ]
    for model, metric, value, rows in results:
        lines.append("| %s | %s | %s | %d | %s | %d |" % (model, metric, value, rows, date, seed))
    lines += ["", "Training seed %d, data seed %s; training took %.0f s on %d torch threads." % (
        seed, data_seed if data_seed is not None else "unknown", elapsed, torch.get_num_threads()), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    log("wrote %s" % os.path.relpath(path))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.path.join(HERE, "out"))
    ap.add_argument("--models", default=os.path.join(HERE, "..", "models"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--data-seed", type=int, default=None, help="the generator's seed, recorded in METRICS.md")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="bandwidth,anomaly,placement")
    ap.add_argument("--bw-epochs", type=int, default=5)
    ap.add_argument("--bw-samples", type=int, default=200000, help="training windows drawn per epoch")
    ap.add_argument("--bw-batch", type=int, default=512)
    ap.add_argument("--bw-lr", type=float, default=2e-3)
    ap.add_argument("--bw-hidden", type=int, default=128)
    ap.add_argument("--anomaly-epochs", type=int, default=4)
    ap.add_argument("--anomaly-hidden", type=int, default=64)
    ap.add_argument("--placement-epochs", type=int, default=8)
    ap.add_argument("--placement-hidden", type=int, default=64)
    ap.add_argument("--verbose", action="store_true", help="evaluate on the held-out set after every epoch")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    torch.use_deterministic_algorithms(True)
    set_seed(args.seed)
    os.makedirs(args.models, exist_ok=True)
    only = set(x.strip() for x in args.only.split(",") if x.strip())
    results = []
    t_all = time.time()
    if "bandwidth" in only:
        log("bandwidth: LSTM(hidden %d) forecaster" % args.bw_hidden)
        t0 = time.time()
        mat = load_matrix(os.path.join(args.data, "bandwidth.features.csv"), "bandwidth", ("vm_id", "timestamp"))
        train_bandwidth(mat, args, args.models, results)
        del mat
        log("bandwidth: done in %.0fs" % (time.time() - t0))
    if "anomaly" in only:
        log("anomaly: MLP classifier")
        t0 = time.time()
        mat = load_matrix(os.path.join(args.data, "anomaly.features.csv"), "anomaly", ("vm_id", "timestamp"), ("label.anomaly_type",))
        train_anomaly(mat, args, args.models, results)
        del mat
        log("anomaly: done in %.0fs" % (time.time() - t0))
    if "placement" in only:
        log("placement: MLP scorer")
        t0 = time.time()
        mat = load_matrix(os.path.join(args.data, "placement.features.csv"), "placement")
        train_placement(mat, args, args.models, results)
        log("placement: done in %.0fs" % (time.time() - t0))
    elapsed = time.time() - t_all
    write_metrics_md(os.path.join(args.models, "METRICS.md"), results, args.seed, args.data_seed, elapsed)
    log("\n| model | metric | value | held-out rows |\n|---|---|---|---|")
    for model, metric, value, rows in results:
        log("| %s | %s | %s | %d |" % (model, metric, value, rows))
    log("train: done in %.0fs" % elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
