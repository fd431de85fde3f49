"""Chest X-ray triage pipeline: the work behind the Airflow DAGs (no Airflow imports here)."""

__version__ = "0.1.0"
