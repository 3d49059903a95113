"""A small client for Airflow 3's REST API (v2): log in, unpause, trigger, follow a run."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import requests

TERMINAL = {"success", "failed"}


class AirflowError(Exception):
    """The API refused a request or a run did not finish as expected."""


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str):
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        response = requests.post(f"{self.base}/auth/token", json={"username": username, "password": password},
                                 timeout=30)
        if response.status_code not in (200, 201):
            raise AirflowError(f"login to {self.base} as {username!r} failed: HTTP {response.status_code}")
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    @classmethod
    def from_password_file(cls, base_url: str, password_file: Path, username: str = "admin") -> AirflowClient:
        passwords = json.loads(password_file.read_text())
        return cls(base_url, username, passwords[username])

    def _call(self, method: str, path: str, **kwargs) -> dict:
        response = self.session.request(method, f"{self.base}/api/v2{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise AirflowError(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else {}

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict:
        """Wait until the dag-processor has parsed the DAG; import errors are reported."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self._call("GET", f"/dags/{dag_id}")
            except AirflowError:
                errors = self._call("GET", "/importErrors").get("import_errors", [])
                if errors:
                    raise AirflowError("DAG import errors:\n" + "\n".join(e["stack_trace"] for e in errors)) from None
                time.sleep(2)
        raise AirflowError(f"DAG {dag_id} was not parsed within {timeout:.0f} s")

    def unpause(self, dag_id: str) -> None:
        self._call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self._call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        items = self._call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in items}

    def wait(self, dag_id: str, run_id: str, timeout: float = 1800,
             on_change: Callable[[str, str | None], None] | None = None) -> str:
        """Follow a run to its end, reporting each task state change; return the final state."""
        seen: dict[str, str | None] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for task, state in self.task_states(dag_id, run_id).items():
                if seen.get(task, "unset") != state:
                    seen[task] = state
                    if on_change:
                        on_change(task, state)
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL:
                return state
            time.sleep(3)
        raise AirflowError(f"run {run_id} of {dag_id} did not finish within {timeout:.0f} s")
