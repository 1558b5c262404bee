"""Plots of the load benchmark: throughput against concurrency, latency
percentiles against concurrency, and batch/stream throughput beside the
echo ceiling. Input: the load.csv that `cargo bench --bench load` writes."""
import csv
import sys
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src, out = sys.argv[1], sys.argv[2]
rows = list(csv.DictReader(open(src)))
unary = [r for r in rows if r["group"] == "unary"]


def series(name, size, field):
    pts = sorted(
        (int(r["concurrency"]), float(r[field]))
        for r in unary
        if r["scenario"] == name and int(r["size"]) == size
    )
    return [p[0] for p in pts], [p[1] for p in pts]


written = []


def save(fig, name):
    fig.tight_layout()
    fig.savefig(f"{out}/{name}", dpi=110)
    written.append(f"{out}/{name}")


if unary:
    fig, ax = plt.subplots(figsize=(8, 5))
    x, y = series("empty RPC (health)", 0, "calls_per_s")
    ax.plot(x, y, "k--", marker="o", label="empty RPC (transport ceiling)")
    for size, style in [(16, "-"), (64, "-"), (256, ":"), (4096, "-.")]:
        x, y = series("Encrypt", size, "calls_per_s")
        ax.plot(x, y, style, marker="s", label=f"Encrypt {size} B")
    x, y = series("Decrypt", 64, "calls_per_s")
    ax.plot(x, y, "-", marker="^", label="Decrypt 64 B")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent calls (4 HTTP/2 connections)")
    ax.set_ylabel("calls/s")
    ax.set_title("Unary throughput against concurrency (server on 1 core, client on the other)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save(fig, "unary-throughput.png")

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, size, color in [("empty RPC (health)", 0, "k"), ("Encrypt", 64, "tab:blue"), ("Decrypt", 64, "tab:orange")]:
        for field, style in [("p50_us", "-"), ("p99_us", "--"), ("p999_us", ":")]:
            x, y = series(name, size, field)
            label = f"{name}{'' if size == 0 else f' {size} B'} {field[:-3].replace('p999', 'p99.9')}"
            ax.plot(x, y, style, color=color, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent calls (4 HTTP/2 connections)")
    ax.set_ylabel("latency (µs)")
    ax.set_title("Unary latency percentiles against concurrency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=3)
    save(fig, "unary-latency.png")

batch = defaultdict(dict)
for r in rows:
    if r["group"] in ("batch", "stream") or r["scenario"] == "raw AES-256-GCM seal":
        batch[r["scenario"]][int(r["size"])] = float(r["records_per_s"])
sizes = sorted({s for d in batch.values() for s in d})
names = [n for n in ["raw AES-256-GCM seal", "echo EncryptBatch", "EncryptBatch", "echo EncryptStream", "EncryptStream", "echo DecryptBatch", "DecryptBatch", "echo DecryptStream", "DecryptStream"] if n in batch]
fig, ax = plt.subplots(figsize=(9, 5))
width = 0.8 / max(len(names), 1)
for i, n in enumerate(names):
    xs = [j + i * width for j in range(len(sizes))]
    ax.bar(xs, [batch[n].get(s, 0) / 1e6 for s in sizes], width, label=n, hatch="//" if n.startswith("echo") else None)
ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(sizes))])
ax.set_xticklabels([f"{s} B" for s in sizes])
ax.set_ylabel("million records/s")
ax.set_title("Batches of 1,000 records: Envelope beside the echo (transport) and raw AES ceilings")
ax.grid(True, axis="y", alpha=0.3)
ax.legend(fontsize=8)
save(fig, "batch-throughput.png")
print("wrote", ", ".join(written))
