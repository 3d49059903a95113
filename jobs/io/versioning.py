"""Training snapshots under DVC: tracked, pushed to the S3 remote, restored bit for bit.

A snapshot folder is either a stage output of dvc.yaml (`dvc repro`: its record is the
stage's entry in dvc.lock) or tracked with `dvc add` (the DAGs: its record is the
`.dvc` file). Either way the record (md5 of the folder, size, file count) and its text
are stored with the model version, and `restore` rebuilds the folder from the remote
and checks its hash. DVC commands never run concurrently: a lock file serialises them
here, on top of DVC's own repository lock (which we wait for instead of failing).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from jobs.config import Env
from jobs.errors import ConfigError, ServiceUnavailable, SnapshotMismatch

log = logging.getLogger(__name__)

RETRY_DELAYS_S = (2, 5, 15)


@dataclass(frozen=True)
class Record:
    """What identifies a snapshot: DVC's hash of the folder, and the text DVC recorded it in."""

    path: str         # relative to the DVC repository
    md5: str          # e.g. "4f0c...e1.dir"
    size: int
    nfiles: int
    source: str       # "dvc.lock" or "<path>.dvc"
    text: str         # the record file's content

    def as_tags(self) -> dict[str, str]:
        return {"dvc_md5": self.md5, "dvc_path": self.path, "dvc_record": self.source,
                "dvc_size": str(self.size), "dvc_nfiles": str(self.nfiles)}


# -- hashing (independent of DVC's state database) ---------------------------------------------------
def file_md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - DVC's content address, not a security hash
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_hash(folder: Path) -> tuple[str, int, int]:
    """DVC's hash of a folder: md5 of its sorted (md5, relpath) listing, with '.dir'; plus size and count."""
    entries, size = [], 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        entries.append({"md5": file_md5(path), "relpath": rel})
        size += path.stat().st_size
    entries.sort(key=lambda e: e["relpath"])
    manifest = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(manifest).hexdigest() + ".dir", size, len(entries)  # noqa: S324


# -- running DVC ----------------------------------------------------------------------------------
@contextmanager
def exclusive(env: Env) -> Iterator[None]:
    """One DVC operation at a time in this repository (across processes)."""
    lock_dir = env.dvc_root / ".dvc" / "tmp"
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "batchloop.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _dvc_env(env: Env) -> dict[str, str]:
    return {**os.environ, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
            "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}


def dvc(env: Env, *args: str, timeout: float = 1800) -> str:
    """Run one DVC command in the repository (waiting for DVC's own lock); its output, or a clear error."""
    executable = str(Path(sys.executable).parent / "dvc") if (Path(sys.executable).parent / "dvc").exists() else "dvc"
    result = subprocess.run([executable, "--wait-for-lock", *args], cwd=env.dvc_root, env=_dvc_env(env),
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-6:]
        raise ServiceUnavailable(f"dvc {' '.join(args)} failed: {' | '.join(tail)}")
    return result.stdout


def configure_remote(env: Env) -> None:
    """Point the repository's remote at this environment's bucket and endpoint (git-ignored config.local)."""
    if not (env.dvc_root / ".dvc").is_dir():
        raise ConfigError(f"{env.dvc_root} is not a DVC repository (no .dvc/): run `dvc init` there")
    dvc(env, "remote", "modify", "--local", env.dvc_remote, "url", f"s3://{env.bucket_dvc}/store")
    if env.s3_endpoint_url:
        dvc(env, "remote", "modify", "--local", env.dvc_remote, "endpointurl", env.s3_endpoint_url)


def _with_retries(what: str, action) -> None:
    for attempt, delay in enumerate((*RETRY_DELAYS_S, None), start=1):
        try:
            action()
            return
        except ServiceUnavailable as exc:
            if delay is None:
                raise ServiceUnavailable(f"{what} failed after {attempt} attempts; is the S3 server up? "
                                         f"Last error: {exc}") from None
            log.warning("%s failed (attempt %d), retrying in %d s: %s", what, attempt, delay, exc)
            time.sleep(delay)


# -- records --------------------------------------------------------------------------------------
def _lock_entry(env: Env, rel: str) -> tuple[dict, str] | None:
    lock = env.dvc_root / "dvc.lock"
    if not lock.exists():
        return None
    text = lock.read_text()
    for stage in (yaml.safe_load(text) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == rel:
                return out, text
    return None


def _pipeline_outs(env: Env) -> dict[str, str]:
    """Output path -> the dvc.yaml stage that writes it (`foreach` stages resolved by DVC, e.g. `snapshot@churn`)."""
    if not (env.dvc_root / "dvc.yaml").exists():
        return {}
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(env.dvc_root)) as repo:
        return {str(out.def_path): stage.name for stage in repo.index.stages
                if isinstance(stage, PipelineStage) for out in stage.outs}


def relative(env: Env, folder: Path) -> str:
    try:
        return folder.resolve().relative_to(env.dvc_root.resolve()).as_posix()
    except ValueError:
        raise ConfigError(f"{folder} is outside the DVC repository {env.dvc_root}") from None


def track(env: Env, folder: Path, push: bool = True) -> Record:
    """Record a snapshot folder with DVC (stage output or `dvc add`), check its hash, push it to the remote."""
    rel = relative(env, folder)
    md5, size, nfiles = folder_hash(folder)
    stages = _pipeline_outs(env)
    with exclusive(env):
        if rel in stages:
            entry = _lock_entry(env, rel)
            if entry is None:
                raise SnapshotMismatch(f"{rel} is a dvc.yaml output but dvc.lock has no record of it: "
                                       "run it through `dvc repro`")
            out, text = entry
            source = "dvc.lock"
        else:
            text = _add_unpinned(env, folder)
            out, source = yaml.safe_load(text)["outs"][0], f"{rel}.dvc"
        if out["md5"] != md5:
            raise SnapshotMismatch(f"{rel} has hash {md5} but {source} records {out['md5']}: the folder changed "
                                   "after DVC recorded it")
        if push:
            configure_remote(env)
            if source == "dvc.lock":
                _with_retries(f"dvc push of {rel}", lambda: dvc(env, "push", "-r", env.dvc_remote, stages[rel]))
            else:
                _push_record(env, text, rel)
    log.info("snapshot %s is %s (%d files, %d bytes), recorded in %s%s", rel, md5, nfiles, size, source,
             " and pushed" if push else "")
    return Record(rel, md5, size, nfiles, source, text)


def _add_unpinned(env: Env, folder: Path) -> str:
    """`dvc add` a folder without leaving a .dvc file in the repository: the record is kept with the
    model version instead (a .dvc file there would ask to be committed to git)."""
    scratch = env.dvc_root / f".track-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    folder.rename(scratch / "snapshot")
    try:
        dvc(env, "add", f"{scratch.name}/snapshot")
        text = (scratch / "snapshot.dvc").read_text()
    finally:
        (scratch / "snapshot").rename(folder)
        shutil.rmtree(scratch, ignore_errors=True)
    return text


def _push_record(env: Env, text: str, rel: str) -> None:
    """Push the cached files of a recorded folder (from its .dvc text) to the remote."""
    scratch = env.dvc_root / f".push-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        (scratch / "snapshot.dvc").write_text(text)
        _with_retries(f"dvc push of {rel}", lambda: dvc(env, "push", "-r", env.dvc_remote,
                                                         f"{scratch.name}/snapshot.dvc"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def record_from_text(text: str, source: str, path: str) -> dict:
    """The output entry for `path` in a stored .dvc or dvc.lock text."""
    doc = yaml.safe_load(text) or {}
    outs = doc.get("outs", []) if source != "dvc.lock" else [
        o for s in doc.get("stages", {}).values() for o in s.get("outs", [])]
    for out in outs:
        if source != "dvc.lock" or out.get("path") == path:
            return out
    raise SnapshotMismatch(f"{source} holds no record of {path}")


def restore(env: Env, md5: str, size: int, nfiles: int, destination: Path) -> Path:
    """Pull a snapshot by its recorded hash from the remote into `destination`, and verify it."""
    scratch = env.dvc_root / f".restore-{uuid.uuid4().hex[:8]}"
    scratch.mkdir()
    try:
        pointer = {"outs": [{"md5": md5, "size": size, "nfiles": nfiles, "hash": "md5", "path": "snapshot"}]}
        (scratch / "snapshot.dvc").write_text(yaml.safe_dump(pointer, sort_keys=False))
        with exclusive(env):
            configure_remote(env)
            _with_retries("dvc pull", lambda: dvc(env, "pull", "-r", env.dvc_remote,
                                                   f"{scratch.name}/snapshot.dvc"))
        got, _, _ = folder_hash(scratch / "snapshot")
        if got != md5:
            raise SnapshotMismatch(f"restored snapshot has hash {got}, expected {md5}")
        if destination.exists():
            shutil.rmtree(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(scratch / "snapshot"), destination)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("restored %s into %s; hash verified", md5, destination)
    return destination
