"""The gate: does the challenger (this workspace's ensemble) replace the champion (the production
version, serving/production.json)?  python -m tasks.promote [--out FILE]

Both are judged on the same rows, the validation split, which arriving data never joins (intake
rows go to training only), so nights compare like with like; the answer key is never read. The
challenger is promoted only if it passes every check of params.yaml's `promotion`:

- errors: at most `max_extra_errors` more gate errors than the champion;
- McNemar's exact test on the rows where exactly one of the two is right: a difference with p below
  `alpha` is real (a regression or an improvement), otherwise noise, and a real regression fails;
- robustness: on both paths (the model's and the recognizer's), the mean accuracy over corruptions
  at most `robustness_drop` lower and the worst corruption at most `worst_drop` lower than the
  champion's figures of its own run.

With no champion the challenger is the first version. Prints the decision as JSON (and writes it to
--out); the flow publishes it (digits/registry.py) and shows it as an artifact.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from digits import params as params_mod
from digits import paths, registry
from digits.io import sha256, to_images, write_json
from digits.params import Promotion

PATHS = ("model", "recognizer")       # the robustness stage's two paths


def mcnemar(champion_right: np.ndarray, challenger_right: np.ndarray) -> dict:
    """McNemar's exact test on paired outcomes: the two-sided binomial p of the discordant rows."""
    from scipy.stats import binomtest
    b = int(np.sum(champion_right & ~challenger_right))      # only the champion is right
    c = int(np.sum(~champion_right & challenger_right))      # only the challenger is right
    p = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return {"champion_only_right": b, "challenger_only_right": c, "p_value": p}


def _robustness_checks(champion: dict | None, challenger: dict | None, rules: Promotion) -> list[dict]:
    if not champion or not challenger:
        return [{"check": "robustness", "ok": True,
                 "note": "no robustness figures for " + ("the champion" if not champion else "the challenger")}]
    checks = []
    for path in PATHS:
        for key, drop in (("mean_corrupted", rules.robustness_drop), ("worst", rules.worst_drop)):
            old, new = champion[path][key], challenger[path][key]
            checks.append({"check": f"robustness {path}.{key}", "champion": old, "challenger": new,
                           "limit": round(old - drop, 6), "ok": new >= old - drop - 1e-12})
    return checks


def decide(y: np.ndarray, challenger_pred: np.ndarray, champion_pred: np.ndarray | None, rules: Promotion,
           challenger_robustness: dict | None = None, champion_robustness: dict | None = None) -> dict:
    """The decision from the gate labels `y` and both models' predicted labels on those rows."""
    new_right = challenger_pred == y
    challenger = {"accuracy": float(new_right.mean()), "errors": int((~new_right).sum()),
                  "robustness": challenger_robustness}
    if champion_pred is None:
        return {"promote": True, "verdict": "first model", "reason": "no model in production yet",
                "challenger": challenger, "champion": None, "checks": [], "mcnemar": None}
    old_right = champion_pred == y
    champion = {"accuracy": float(old_right.mean()), "errors": int((~old_right).sum()),
                "robustness": champion_robustness}
    test = mcnemar(old_right, new_right)
    real = test["p_value"] < rules.alpha
    b, c = test["champion_only_right"], test["challenger_only_right"]
    verdict = ("regression" if b > c else "improvement") if real else "no significant difference (noise)"
    checks = [{"check": "errors", "champion": champion["errors"], "challenger": challenger["errors"],
               "limit": champion["errors"] + rules.max_extra_errors,
               "ok": challenger["errors"] <= champion["errors"] + rules.max_extra_errors},
              {"check": "mcnemar", "p_value": test["p_value"], "alpha": rules.alpha, "verdict": verdict,
               "ok": verdict != "regression"}]
    checks += _robustness_checks(champion_robustness, challenger_robustness, rules)
    failed = [c for c in checks if not c["ok"]]
    if failed:
        reason = "kept the champion: " + "; ".join(_why(c) for c in failed)
    else:
        reason = (f"promoted: {challenger['errors']} gate errors against the champion's {champion['errors']} "
                  f"({verdict}), robustness within its limits")
    return {"promote": not failed, "verdict": verdict, "reason": reason, "challenger": challenger,
            "champion": champion, "checks": checks, "mcnemar": test}


def _why(check: dict) -> str:
    if check["check"] == "mcnemar":
        return f"McNemar's test calls it a regression (p = {check['p_value']:.3g} < {check['alpha']})"
    return f"{check['check']} {check['challenger']:g} against the champion's {check['champion']:g} (limit {check['limit']:g})"


def _labels(models: dict, x: np.ndarray, tta) -> np.ndarray:
    from digits import ensemble
    return ensemble.predict(models, x, tta).argmax(axis=1)


def _robustness(root: Path) -> dict | None:
    f = root / paths.ROBUSTNESS_METRICS
    return json.loads(f.read_text()) if f.exists() else None


def evaluate(root: Path = Path(".")) -> dict:
    """The decision for the repository at `root`: its ensemble against its production version."""
    import pandas as pd

    from digits import ensemble
    root = Path(root)
    p = params_mod.load(root / paths.PARAMS)
    x, y = to_images(pd.read_parquet(root / paths.SPLIT_VAL))
    files = ensemble.model_files(p.ensemble.members, root)
    challenger_pred = _labels(ensemble.load(files), x, p.ensemble.tta)
    record = registry.production(root)
    champion_pred = champion_rob = None
    if record:
        champion_pred = _labels(ensemble.load(registry.production_files(record, root)), x, record.get("tta", ()))
        champion_rob = record.get("figures", {}).get("robustness")
    decision = decide(y, challenger_pred, champion_pred, p.promotion, _robustness(root), champion_rob)
    if record:
        decision["champion"] |= {"version": record["version"], "commit": record["commit"]}
        same = {n: sha256(f) for n, f in files.items()} == record.get("sha256")
        if same:
            decision |= {"promote": False, "verdict": "unchanged",
                         "reason": f"the challenger is {record['version']} itself: nothing to promote"}
    decision["gate"] = {"file": str(paths.SPLIT_VAL), "rows": int(len(y)), "sha256": sha256(root / paths.SPLIT_VAL)}
    decision["challenger"] |= {"files": {n: str(f.relative_to(root)) for n, f in files.items()},
                               "tta": list(p.ensemble.tta)}
    return decision


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.promote", description=__doc__.split("\n")[0])
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, help="also write the decision here (JSON)")
    args = ap.parse_args(argv)
    decision = evaluate(args.repo)
    if args.out:
        write_json(args.out, decision)
    print(json.dumps(decision, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
