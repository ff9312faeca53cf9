"""Stage score: the submission against the answer key (bundled MNIST's 10,000 test labels).

The only reader of data/answer_key/. With Kaggle's files there is no key: the metrics file says
so (`"answer_key": false`) and the stage succeeds.
"""
import pandas as pd

from digits import paths
from digits.cli import DataError, run_stage
from digits.io import write_json


def score(submission_path, key_path) -> dict:
    if not key_path.exists():
        return {"answer_key": False, "note": "no answer key (Kaggle's own files): nothing to score"}
    sub = pd.read_csv(submission_path)
    key = pd.read_csv(key_path)
    if len(sub) != len(key):
        raise DataError(f"{submission_path}: {len(sub)} rows, the answer key {key_path} has {len(key)}")
    differ = (sub.ImageId.to_numpy() != key.ImageId.to_numpy()).nonzero()[0]
    if len(differ):
        i = differ[0]
        raise DataError(f"{submission_path}: ImageIds do not match the answer key {key_path}: "
                        f"{len(differ)} differ, the first at row {i + 1} ({sub.ImageId[i]} where the key has {key.ImageId[i]})")
    errors = int((sub.Label.to_numpy() != key.Label.to_numpy()).sum())
    return {"answer_key": True, "test_accuracy": 1 - errors / len(key), "test_errors": errors, "test_n": len(key)}


def main() -> None:
    result = score(paths.SUBMISSION, paths.ANSWER_KEY)
    write_json(paths.SCORE_METRICS, result)
    if result["answer_key"]:
        print(f"score: test accuracy {result['test_accuracy']:.4f} ({result['test_errors']} errors "
              f"of {result['test_n']}) on the held-out answer key")
    else:
        print(f"score: {result['note']}")


if __name__ == "__main__":
    run_stage(main)
