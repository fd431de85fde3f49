"""Helpers shared by the tests: services on loopback, tiny models and runs, Airflow homes, the cluster harness."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository root."""
