"""Fixtures for DAG tests live in tests/conftest.py (the DAG world is shared with the reliability tests)."""

from tests.conftest import BIN, MODEL, RUN, World, dag_test  # noqa: F401 - re-exported for the DAG tests
