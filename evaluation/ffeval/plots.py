"""PNG figures for ffbench and ffeval (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ffcore.files import atomic_write

#: Points drawn of a PRO curve (the exact curve has two per distinct normal-pixel score).
MAX_PLOT_POINTS = 4000


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """Atomic write: a crash never leaves half a PNG."""
    plt = _plt()
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return Path(path)


def bench_plot(report: dict, path: str | Path) -> Path:
    """Left: p50 latency per stage (stacked) with p99 of the total, vs batch.
    Right: images/s vs batch (pipeline, inference only, and PyTorch eager when measured)."""
    plt = _plt()
    rows = report["results"]
    b = [r["batch"] for r in rows]
    x = np.arange(len(b))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    bottom = np.zeros(len(b))
    for stage, colour in (("preprocess", "#4c72b0"), ("inference", "#dd8452"), ("postprocess", "#55a868")):
        v = np.array([r["stages"][stage]["p50_ms"] for r in rows])
        ax1.bar(x, v, 0.6, bottom=bottom, label=f"{stage} p50", color=colour)
        bottom += v
    ax1.plot(x, [r["stages"]["total"]["p99_ms"] for r in rows], "k_", markersize=18, mew=2, label="total p99")
    if any(r.get("torch_eager") for r in rows):
        ax1.plot(x, [r["torch_eager"]["inference"]["p50_ms"] if r.get("torch_eager") else np.nan for r in rows],
                 "rD", label="PyTorch eager inference p50")
    ax1.set_xticks(x, [str(v) for v in b])
    ax1.set_xlabel("batch size")
    ax1.set_ylabel("latency per call (ms)")
    ax1.set_title("latency per call")
    ax1.legend(fontsize=8)
    ax2.plot(b, [r["throughput_images_per_s"]["pipeline"] for r in rows], "o-", label="pipeline (pre+infer+post)")
    ax2.plot(b, [r["throughput_images_per_s"]["inference"] for r in rows], "s--", label="inference only")
    if any(r.get("torch_eager") for r in rows):
        ax2.plot(b, [r["torch_eager"]["inference"]["images_per_s"] if r.get("torch_eager") else np.nan for r in rows],
                 "D:", color="r", label="PyTorch eager inference")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(b, [str(v) for v in b])
    ax2.set_xlabel("batch size")
    ax2.set_ylabel("images / s")
    ax2.set_ylim(bottom=0)
    ax2.set_title("throughput")
    ax2.legend(fontsize=8)
    m, be = report["model"], report["backend"]
    cpu = report["machine"]["cpu"]
    fig.suptitle(
        f"{Path(m['path']).name}: {m['backbone']} {m['input']['height']}x{m['input']['width']} {m['precision']} | "
        f"{be['description']} | {cpu['model']}, {cpu['physical_cores']} cores",
        fontsize=9,
    )
    return _save(fig, path)


def roc_plot(fpr, tpr, auroc: float, title: str, path: str | Path, per_type: dict | None = None,
             operating_point: tuple[float, float, float] | None = None) -> Path:
    """``operating_point``: (fpr, tpr, threshold) of the stored threshold, marked on the curve."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, tpr, lw=2, label=f"all defects, AUROC {auroc:.4f}")
    if operating_point is not None:
        f, t, thr = operating_point
        ax.plot([f], [t], "ko", label=f"stored threshold {thr:.4g}: FPR {f:.3f}, TPR {t:.3f}")
    for name, (f, t, a) in (per_type or {}).items():
        ax.plot(f, t, lw=1, alpha=0.8, label=f"{name}, AUROC {a:.4f}")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_xlabel("false positive rate (normal images rejected)")
    ax.set_ylabel("true positive rate (defective images caught)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def pro_plot(fpr, pro, aupro_value: float, fpr_limit: float, title: str, path: str | Path) -> Path:
    """Draws the exact curve of ffcore.metrics.pro_curve (the one aupro integrates),
    thinned to at most ``MAX_PLOT_POINTS`` evenly spaced points for the picture."""
    plt = _plt()
    fpr, pro = np.asarray(fpr), np.asarray(pro)
    if fpr.size > MAX_PLOT_POINTS:
        keep = np.unique(np.linspace(0, fpr.size - 1, MAX_PLOT_POINTS).astype(np.int64))
        fpr, pro = fpr[keep], pro[keep]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(fpr, pro, lw=2, label=f"AUPRO@{fpr_limit:g} {aupro_value:.4f}")
    ax.axvline(fpr_limit, color="k", ls=":", lw=1)
    ax.set_xlabel("pixel false positive rate")
    ax.set_ylabel("per-region overlap")
    ax.set_xlim(0, min(1.0, fpr_limit * 1.05))
    ax.set_ylim(0, 1.01)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def overlay_grid(rows: list[dict], title: str, path: str | Path) -> Path:
    """One row per example: image | heat map | predicted mask | ground truth.

    Each row dict: ``image`` (uint8 BGR), ``heat`` and ``pred`` (uint8 BGR pictures from
    ffrt.overlay.render_overlay), ``gt`` (bool mask or None), ``label`` (row title).
    """
    plt = _plt()
    n = max(1, len(rows))
    fig, axes = plt.subplots(n, 4, figsize=(10, 2.6 * n), squeeze=False, layout="constrained")
    heads = ("image", "anomaly map (heat)", "predicted mask (outline)", "ground truth")
    for i, row in enumerate(rows):
        pics = [row["image"], row["heat"], row["pred"], row["gt"]]
        for j, pic in enumerate(pics):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if pic is None:
                ax.text(0.5, 0.5, "no pixel ground truth\n(image label only)", ha="center", va="center", fontsize=8)
            elif pic.ndim == 2:
                ax.imshow(pic, cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(pic[..., ::-1])
            if i == 0:
                ax.set_title(heads[j], fontsize=9)
        axes[i][0].set_ylabel(row["label"], fontsize=7, rotation=0, ha="right", va="center")
    if not rows:
        axes[0][0].text(0.5, 0.5, "no examples", ha="center")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
