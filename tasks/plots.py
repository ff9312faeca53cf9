"""Figures as PNG files a person can open (matplotlib, Agg); each written atomically."""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digits.io import atomic_path  # noqa: E402


def save(fig, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def digit_grid(images, titles, path, cols=10, title=None) -> None:
    """A grid of 28x28 uint8 digits with one caption each, on the fixed 0..255 grey scale (so
    changes of brightness and contrast show)."""
    rows = max(1, int(np.ceil(len(images) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, text) in enumerate(zip(images, titles)):
        ax = axes.flat[i]
        ax.imshow(np.asarray(img).reshape(28, 28), cmap="gray_r", vmin=0, vmax=255)
        ax.set_title(text, fontsize=7)
    if title:
        fig.suptitle(title, y=1.03)
    save(fig, path)


def confusion(cm, path, title="Confusion matrix (validation)") -> None:
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > cm.max() / 2 else "black")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    fig.colorbar(im, ax=ax)
    save(fig, path)


def curves(per_class: dict, path, kind: str) -> None:
    """One-vs-rest ROC or precision-recall curves: {class: (x, y, auc)}."""
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, (xs, ys, auc) in per_class.items():
        ax.plot(xs, ys, lw=1, label=f"{c} (AUC {auc:.4f})")
    if kind == "roc":
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xscale="log", xlim=(1e-4, 1))
    else:
        ax.set(xlabel="recall", ylabel="precision", ylim=(0.9, 1.001))
    ax.set_title(f"One-vs-rest {'ROC' if kind == 'roc' else 'precision-recall'} curves (validation)")
    ax.legend(fontsize=7, loc="lower right")
    save(fig, path)


def lines(series: dict, path, title: str, xlabel: str = "epoch") -> None:
    """Panels of curves: {panel title: {label: (x, y)}}."""
    fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 3.8), squeeze=False)
    for ax, (panel, named) in zip(axes.flat, series.items()):
        for label, (xs, ys) in named.items():
            ax.plot(xs, ys, marker="." if len(xs) <= 50 else None, label=label)
        ax.set(title=panel, xlabel=xlabel)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    save(fig, path)


def bars(labels, values, path, title: str, ylabel: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([str(x) for x in labels], values, color="tab:blue")
    for i, v in enumerate(values):
        ax.text(i, v, str(v), ha="center", va="bottom", fontsize=7)
    ax.set(title=title, ylabel=ylabel)
    save(fig, path)


def feature_maps(maps: dict, image, path) -> None:
    """The input digit and the activations of each named layer (up to 16 channels each)."""
    fig, axes = plt.subplots(len(maps) + 1, 16, figsize=(16, 1.1 * (len(maps) + 1)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes[0, 0].imshow(np.asarray(image).reshape(28, 28), cmap="gray_r")
    axes[0, 0].set_title("input", fontsize=7)
    for r, (name, fm) in enumerate(maps.items(), start=1):
        for c in range(min(16, fm.shape[-1])):
            axes[r, c].imshow(fm[..., c], cmap="viridis")
        axes[r, 0].set_title(name, fontsize=7, loc="left")
    save(fig, path)


def scatter(points: dict, path, title: str, xlabel: str, ylabel: str) -> None:
    """Labelled points {name: (x, y)} on a log-x axis."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, (x, y) in points.items():
        ax.scatter(x, y)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xscale="log", title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    save(fig, path)


def reliability(rows, path, title: str) -> None:
    """Reliability diagram from rows (bin_lower, bin_upper, confidence, accuracy, count), as
    calibration.reliability gives them: accuracy per confidence bin against the diagonal, shaded up
    to the bin's mean confidence, and the bins' counts (log scale) in a panel below."""
    lower, upper, conf, acc, count = (np.asarray(c, dtype=float) for c in zip(*rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    top.bar(lower, acc, width=upper - lower, align="edge", edgecolor="black", label="accuracy")
    top.bar(lower, conf - acc, bottom=acc, width=upper - lower, align="edge", color="tab:red", alpha=0.3,
            edgecolor="tab:red", hatch="//", label="gap to the mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set(ylabel="accuracy", ylim=(0, 1), title=title)
    top.legend(fontsize=8, loc="upper left")
    bottom.bar(lower, count, width=upper - lower, align="edge", color="tab:gray", edgecolor="black")
    bottom.set(xlabel="confidence (largest probability)", ylabel="images", yscale="log", xlim=(0, 1))
    save(fig, path)


def grouped_bars(table: dict, path, title: str, ylabel: str) -> None:
    """{group: {series: value}}: one cluster of bars per group (x axis), one colour per series."""
    groups = list(table)
    series = list(dict.fromkeys(s for values in table.values() for s in values))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(groups) * max(1, len(series) / 2)), 4))
    for i, name in enumerate(series):
        xs = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        ax.bar(xs, [table[g].get(name, np.nan) for g in groups], width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=45, ha="right")
    ax.set(title=title, ylabel=ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    save(fig, path)

