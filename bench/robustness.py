"""Robustness before and after: one model file on both paths of the robustness stage.

    python -m bench.robustness --label after                        # the pipeline's ensemble (params.yaml)
    python -m bench.robustness --label before --model old.keras     # any saved model

Measures the model path (the first robustness.images validation images under every corruption,
fed to the model as they are) and the recognizer path (the first robustness.recognizer_images of
them as PNG files through the CLI's code), exactly as tasks/robustness.py does, and merges the row
into bench/results/robustness.json under its label, with the machine, the model and a note.
"""
import argparse
import json

from bench import ROOT, machine, table

RESULTS = ROOT / "bench/results/robustness.json"


def main() -> None:
    import pandas as pd

    from digits import ensemble, params, paths, recognize
    from digits.io import to_images
    from tasks import robustness as rb
    ap = argparse.ArgumentParser(prog="python -m bench.robustness", description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True, help="the row's name, e.g. before or after")
    ap.add_argument("--model", help="a .keras file (default: the ensemble of params.yaml)")
    ap.add_argument("--note", default="", help="what the model is (recipe, epochs)")
    args = ap.parse_args()
    p = params.load(ROOT / "params.yaml")
    files = {"model": ROOT / args.model} if args.model else ensemble.model_files(p.ensemble.members)
    models = ensemble.load(files)
    xv, yv = to_images(pd.read_parquet(ROOT / paths.SPLIT_VAL))
    n = min(p.robustness.images or len(yv), len(yv))
    m = min(p.robustness.recognizer_images or n, n)
    sets = rb.corrupted(xv[:n].reshape(n, 28, 28), p.robustness.seed)
    tta = () if args.model else p.ensemble.tta
    classify = lambda images: ensemble.predict(models, images, tta).argmax(axis=1)
    model_path = rb.measure({"model": classify}, sets, yv[:n])["model"]
    via = rb.through_recognizer(recognize.Predictor(models, files, tta))
    recognizer_path = rb.measure({"recognizer": via}, {k: v[:m] for k, v in sets.items()}, yv[:m])["recognizer"]
    doc = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"seed": p.robustness.seed, "rows": {}}
    doc["rows"][args.label] = {"machine": machine(), "model": args.model or ", ".join(files), "note": args.note,
                               "model_path": {"images": n} | model_path,
                               "recognizer_path": {"images": m} | recognizer_path}
    RESULTS.write_text(json.dumps(doc, indent=1) + "\n")
    names = list(model_path["corruptions"])
    table(f"Robustness, {args.label} ({machine()})", ["corruption", "model path", "recognizer path"],
          [["clean", f"{model_path['clean']:.4f}", f"{recognizer_path['clean']:.4f}"]]
          + [[c, f"{model_path['corruptions'][c]:.4f}", f"{recognizer_path['corruptions'][c]:.4f}"] for c in names]
          + [["mean", f"{model_path['mean_corrupted']:.4f}", f"{recognizer_path['mean_corrupted']:.4f}"]])
    print(f"written: {RESULTS.relative_to(ROOT)} (row {args.label!r})")


if __name__ == "__main__":
    main()
