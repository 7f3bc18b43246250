"""`guardstream eval --plot DIR`: the curves as PNGs a safety lead can look at. Needs matplotlib
(`pip install 'guardstream[plots]'`); nothing else in guardstream imports it."""

from __future__ import annotations

from pathlib import Path

from guardstream.evaluation.curves import curves, reliability
from guardstream.evaluation.dataset import LabelledItem
from guardstream.evaluation.metrics import MODES, Prediction


def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot draws with matplotlib, which is not installed: pip install 'guardstream[plots]'") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot(items: list[LabelledItem], predictions: list[Prediction], into: Path, title: str) -> list[Path]:
    """pr-strict.png and pr-loose.png (a precision-recall curve per category, and all together),
    and reliability.png (the unsafe probability against the labels' unsafe share, both modes)."""
    plt = pyplot()
    into.mkdir(parents=True, exist_ok=True)
    written = []
    for mode in MODES:
        figure, axes = plt.subplots(figsize=(8, 6))
        for name, points in curves(items, predictions, mode).items():
            axes.plot([p.recall for p in points], [p.precision for p in points], marker=".",
                      linewidth=2.5 if name == "all" else 1, label=name)
        axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
                 title=f"{title}: precision against recall, {mode} (each point a threshold)")
        axes.legend(fontsize="small", loc="lower left")
        written.append(saved(plt, figure, into / f"pr-{mode}.png"))
    figure, axes = plt.subplots(figsize=(6, 6))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    for mode in MODES:
        r = reliability(items, predictions, mode)
        axes.plot([b.mean_probability for b in r.bins], [b.unsafe_share for b in r.bins], marker="o",
                  label=f"{mode} (expected calibration error {r.expected_calibration_error:.3f})")
    axes.set(xlabel="the model's unsafe probability (mean in its bin)", ylabel="share labelled unsafe",
             xlim=(0, 1), ylim=(0, 1), title=f"{title}: reliability")
    axes.legend(fontsize="small", loc="upper left")
    written.append(saved(plt, figure, into / "reliability.png"))
    return written


def saved(plt, figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
