"""One machine, one process: serve the pipeline on the nightly schedule (no pools or workers).

    python -m flows.serve
"""
from prefect.schedules import Cron

from flows.pipeline import pipeline

NIGHTLY = Cron("0 2 * * *", timezone="UTC")      # the same schedule as prefect.yaml's `nightly`

if __name__ == "__main__":
    pipeline.serve(name="nightly-local", schedules=[NIGHTLY])
