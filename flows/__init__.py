"""Prefect flows that orchestrate the DVC pipeline (scheduling, retries, workers, run history)."""
