"""What a run records about itself: code version, run id."""

from __future__ import annotations

import os
import subprocess
import uuid
from functools import lru_cache

from jobs import __version__
from jobs.config import PROJECT_ROOT


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the code that runs, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_version() -> str:
    return f"{__version__}+{git_commit()[:12]}"


def orchestrator_run_id() -> str | None:
    """The Airflow run id when a DAG task runs this process."""
    return os.environ.get("BATCHLOOP_RUN_ID") or None


@lru_cache(maxsize=1)
def run_id() -> str:
    """The orchestrator's run id when there is one (Airflow passes it), else one id per process."""
    return os.environ.get("BATCHLOOP_RUN_ID") or f"manual__{uuid.uuid4().hex[:12]}"
