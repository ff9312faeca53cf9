"""Stage predict: test.csv (as Parquet, through the same conversion as training) -> a checked
Kaggle submission `ImageId,Label` from the ensemble (the mean of its members' probabilities, over
the TTA views of params.yaml), plus those N x 10 class probabilities (divided by the temperature
evaluate fitted on validation when calibration.temperature is true)."""
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from digits import paths
from digits.cli import run_stage
from digits.io import atomic_path, to_images
from tasks import submission


def predict(models: dict, frame: pd.DataFrame, tta=()) -> np.ndarray:
    from digits import ensemble
    x, _ = to_images(frame)
    return ensemble.predict(models, x, tta)


def write_submission(probs: np.ndarray, sub_path, prob_path) -> None:
    ids = np.arange(1, len(probs) + 1, dtype=np.int32)
    with atomic_path(sub_path) as tmp:
        pd.DataFrame({"ImageId": ids, "Label": probs.argmax(axis=1)}).to_csv(tmp, index=False)
        submission.check(tmp, rows=len(probs))          # checked before it takes the real name
    table = pa.table({"ImageId": ids} | {f"p{c}": probs[:, c].astype(np.float32) for c in range(10)})
    with atomic_path(prob_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def main() -> None:
    from digits import ensemble
    from digits import params as params_mod
    p = params_mod.load()
    models = ensemble.load(ensemble.model_files(p.ensemble.members))
    probs = predict(models, pq.read_table(paths.TEST_PARQUET).to_pandas(), p.ensemble.tta)
    if p.calibration.temperature:         # fitted by evaluate on validation; argmax is unchanged
        from tasks import calibration
        temperature = json.loads(paths.EVALUATE_METRICS.read_text())["calibration"]["temperature"]
        probs = calibration.apply_temperature(probs, temperature)
        print(f"predict: probabilities scaled by the temperature {temperature:.3f} fitted on validation")
    write_submission(probs, paths.SUBMISSION, paths.PROBABILITIES)
    what = f"ensemble of {len(models)} ({', '.join(models)})" + (f", TTA {'+'.join(p.ensemble.tta)}" if p.ensemble.tta else "")
    print(f"predict: {len(probs):,} test images, {what} -> {paths.SUBMISSION} (checked), {paths.PROBABILITIES}")
    print(f'submit with: kaggle competitions submit -c digit-recognizer -f {paths.SUBMISSION} '
          f'-m "digit-recognizer {what}"')


if __name__ == "__main__":
    run_stage(main)
