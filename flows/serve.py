"""One machine, one process: serve the pipeline on the nightly schedule (no pools or workers).
Each night retrains on what arrived in the inbox and promotes the new model only if it passes the
gate (flows/promotion.py); the clone itself is not moved (the nightly deployment's worker does that).

    python -m flows.serve
"""
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.schedules import Cron

from flows.pipeline import pipeline

NIGHTLY = Cron("0 2 * * *", timezone="UTC")      # the same schedule as prefect.yaml's `nightly`
ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)  # as there

if __name__ == "__main__":
    pipeline.serve(name="nightly-local", schedules=[NIGHTLY], global_limit=ONE_AT_A_TIME, parameters={"promote": True})
