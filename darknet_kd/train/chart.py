"""chart.png as Darknet draws it: loss over iterations, mAP on a second axis."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..fileio import atomic_path  # noqa: E402


def draw_chart(path, iters, losses, map_iters=(), maps=(), title="", max_batches=None) -> None:
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    ax.plot(iters, losses, color="tab:blue", lw=1, label="avg loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss", color="tab:blue")
    if losses:
        hi = sorted(losses)[int(0.98 * (len(losses) - 1))]
        ax.set_ylim(0, max(hi * 1.1, 1e-3))
    if max_batches:
        ax.set_xlim(0, max_batches)
    ax.grid(alpha=0.3)
    if maps:
        ax2 = ax.twinx()
        ax2.plot(map_iters, [100 * m for m in maps], "o-", color="tab:red", label="mAP@0.5 %")
        ax2.set_ylabel("mAP@0.5 (%)", color="tab:red")
        ax2.set_ylim(0, 100)
        best = max(range(len(maps)), key=maps.__getitem__)
        ax2.annotate(f"{100 * maps[best]:.1f}%", (map_iters[best], 100 * maps[best]), textcoords="offset points",
                     xytext=(0, 6), ha="center", color="tab:red")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)
