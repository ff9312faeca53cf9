"""Stage predict: test.csv (as Parquet, through the same conversion as training) -> a checked
Kaggle submission `ImageId,Label` plus the N x 10 class probabilities for ensembling."""
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tasks import paths, submission
from tasks.cli import run_stage
from tasks.io import atomic_path, to_images

BATCH = 1024


def predict(model, frame: pd.DataFrame) -> np.ndarray:
    x, _ = to_images(frame)
    return model.predict(x, batch_size=BATCH, verbose=0)


def write_submission(probs: np.ndarray, sub_path, prob_path) -> None:
    ids = np.arange(1, len(probs) + 1, dtype=np.int32)
    with atomic_path(sub_path) as tmp:
        pd.DataFrame({"ImageId": ids, "Label": probs.argmax(axis=1)}).to_csv(tmp, index=False)
        submission.check(tmp, rows=len(probs))          # checked before it takes the real name
    table = pa.table({"ImageId": ids} | {f"p{c}": probs[:, c].astype(np.float32) for c in range(10)})
    with atomic_path(prob_path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def main() -> None:
    from tasks import model as model_mod
    model = model_mod.load(paths.MODEL)
    probs = predict(model, pq.read_table(paths.TEST_PARQUET).to_pandas())
    write_submission(probs, paths.SUBMISSION, paths.PROBABILITIES)
    print(f"predict: {len(probs):,} test images -> {paths.SUBMISSION} (checked), {paths.PROBABILITIES}")
    print(f'submit with: kaggle competitions submit -c digit-recognizer -f {paths.SUBMISSION} '
          f'-m "digit-recognizer {paths.MODEL}"')


if __name__ == "__main__":
    run_stage(main)
