"""A small client for Airflow 3's REST API (v2): log in, unpause, trigger, run a data interval, backfill, follow runs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import date
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
        self.token = response.json()["access_token"]
        self.session.headers["Authorization"] = f"Bearer {self.token}"

    @classmethod
    def from_password_file(cls, base_url: str, password_file: Path, username: str = "admin") -> AirflowClient:
        passwords = json.loads(password_file.read_text())
        return cls(base_url, username, passwords[username])

    def call(self, method: str, path: str, **kwargs) -> dict:
        response = self.session.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)
        if response.status_code >= 400:
            raise AirflowError(f"{method} {path}: HTTP {response.status_code}: {response.text[:800]}")
        return response.json() if response.content else {}

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 300) -> None:
        """Wait until the dag-processor has parsed every DAG; import errors are reported."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while time.monotonic() < deadline:
            missing = [d for d in dag_ids if not self._exists(d)]
            if not missing:
                return
            errors = self.call("GET", "/importErrors").get("import_errors", [])
            if errors:
                raise AirflowError("DAG import errors:\n" + "\n".join(e["stack_trace"] for e in errors))
            time.sleep(2)
        raise AirflowError(f"DAGs {missing} were not parsed within {timeout:.0f} s")

    def _exists(self, dag_id: str) -> bool:
        try:
            self.call("GET", f"/dags/{dag_id}")
            return True
        except AirflowError:
            return False

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def set_run_state(self, dag_id: str, run_id: str, state: str) -> None:
        """Mark a run `success` or `failed` (its unfinished tasks stop), as the UI's buttons do."""
        self.call("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": state})

    def pause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def trigger(self, dag_id: str, conf: dict | None = None, logical_date: str | None = None) -> str:
        body = {"logical_date": logical_date, "conf": conf or {}}
        return self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def backfill(self, dag_id: str, first: str, last: str, conf: dict | None = None, max_active_runs: int = 1,
                 reprocess: str = "none") -> dict:
        """What `airflow backfill create` does: the scheduler runs every interval of the range."""
        body = {"dag_id": dag_id, "from_date": f"{first}T00:00:00Z", "to_date": f"{last}T00:00:00Z",
                "run_backwards": False, "dag_run_conf": conf or {}, "reprocess_behavior": reprocess,
                "max_active_runs": max_active_runs}
        return self.call("POST", "/backfills", json=body)

    def wait_backfill(self, backfill_id: int, timeout: float = 600) -> dict:
        """Wait until the scheduler marks a backfill complete (a DAG allows one running backfill at a time)."""
        deadline = time.monotonic() + timeout
        while True:
            backfill = self.call("GET", f"/backfills/{backfill_id}")
            if backfill.get("completed_at"):
                return backfill
            if time.monotonic() > deadline:
                raise AirflowError(f"backfill {backfill_id} of {backfill.get('dag_id')} not complete after {timeout}s")
            time.sleep(2)

    def run_interval(self, dag_id: str, start: date, end: date, conf: dict | None = None) -> str:
        """A run of the data interval [start, end), scheduled now (what a backfill makes for each interval).

        A run of that interval that already exists (the same day asked for again) is cleared, so that it
        runs again; its run id is returned either way."""
        logical = f"{start.isoformat()}T00:00:00Z"
        body = {"logical_date": logical, "data_interval_start": logical,
                "data_interval_end": f"{end.isoformat()}T00:00:00Z", "conf": conf or {}}
        try:
            return self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]
        except AirflowError as exc:
            if "HTTP 409" not in str(exc):
                raise
        earlier = [r for r in self.runs(dag_id) if (r.get("logical_date") or "")[:10] == start.isoformat()]
        if not earlier:
            raise AirflowError(f"{dag_id}: a run of {start} exists but was not found")
        run_id = earlier[-1]["dag_run_id"]
        self.call("POST", f"/dags/{dag_id}/dagRuns/{run_id}/clear", json={"dry_run": False})
        return run_id

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 3600, poll: float = 1.0) -> str:
        """Wait for a run's end; its final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL:
                return state
            time.sleep(poll)
        raise AirflowError(f"run {run_id} of {dag_id} did not finish within {timeout:.0f} s")

    def runs(self, dag_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "logical_date"})[
            "dag_runs"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        return {ti["task_id"]: ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        entry = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                          params={"deserialize": True, "stringify": False})
        return entry.get("value")

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
