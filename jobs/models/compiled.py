"""Compiled tree models: a LightGBM booster turned into machine code by lleaves, cached on the host.

A booster walks its trees node by node through generic data structures; lleaves (LLVM)
compiles every tree into branches of native code, in double precision, with LightGBM's
rules for missing values and categorical splits. One thread on this project's 2-core
machine: 3.5x `Booster.predict` for a 200 x 31 model, 5.2x for 500 x 63, equal within
1e-15 (tests/benchmarks/bench_scoring.py).

- **Built once per version and host.** The compiled object file is cached under a key of
  the model text, lleaves' and llvmlite's versions and the CPU (name and features): a
  different machine or library never loads another's code. An exclusive file lock per key
  means two processes never compile the same model at once: the second waits and loads
  what the first wrote (written to a temporary file, then renamed into place).
- **Paid at registration.** Training compiles a registered booster into the cache and
  records how long it took (`compile_seconds`); the scoring workers on the same host only
  load it. A worker on another host compiles on first use, once.
- **Checked before use.** Scoring re-scores the golden sample through the compiled path;
  a difference from the booster's training-time scores above `scoring.golden_tolerance`
  falls back to the booster with a warning. A model lleaves cannot compile (linear trees,
  for example) is scored by the booster.

The predictor does not pickle: each Python worker builds (loads) its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_DIR = Path(tempfile.gettempdir()) / "batchloop-compiled"


def unsupported(model_string: str) -> str | None:
    """Why lleaves cannot compile this booster, or None when it can (as far as the text tells)."""
    header = model_string.split("\nTree=", 1)[0]
    if "is_linear=1" in model_string:
        return "linear trees (a linear model in each leaf)"
    if "num_class=1" not in header:
        return "more than one class"
    return None


def engine() -> str:
    """The compiler and its code generator, as part of every cache key."""
    from importlib.metadata import version

    import llvmlite

    return f"lleaves {version('lleaves')}, llvmlite {llvmlite.__version__}"


def cpu() -> str:
    """The host CPU the code is generated for: its name and a digest of its features."""
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    return f"{llvm.get_host_cpu_name()} {hashlib.sha256(features.encode()).hexdigest()[:12]}"


def cache_key(model_string: str) -> str:
    digest = hashlib.sha256()
    for part in (model_string, engine(), cpu()):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:32]


@dataclass
class Built:
    """A compiled predictor, loaded, and what building it took."""

    model: object  # lleaves.Model, compiled
    compile_seconds: float | None  # None: loaded from the cache

    def predict(self, X):
        return self.model.predict(X, n_jobs=1)  # one thread: Spark runs a worker per core


def build(model_string: str, directory: str | Path | None = None) -> Built:
    """The compiled predictor of a booster's model text: from the host cache, or compiled into it first."""
    import lleaves

    folder = _folder(directory)
    key = cache_key(model_string)
    text, binary = folder / f"{key}.txt", folder / f"{key}.o"
    seconds = None
    with _locked(folder / f"{key}.lock"):
        if not binary.exists():
            t0 = time.perf_counter()
            _write(text, model_string)
            partial = folder / f"{key}.{os.getpid()}.partial"
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
            lleaves.Model(model_file=str(text)).compile(cache=str(partial))
            os.replace(partial, binary)
            seconds = time.perf_counter() - t0
            log.info("compiled a booster (%s) in %.1f s with %s", key, seconds, engine())
        elif not text.exists():
            _write(text, model_string)
    model = lleaves.Model(model_file=str(text))
    model.compile(cache=str(binary))  # loads the object file: no compilation
    return Built(model, seconds)


def _folder(directory: str | Path | None) -> Path:
    folder = Path(directory or DEFAULT_DIR)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a path of the driver's host that this host cannot create
        folder = DEFAULT_DIR
        folder.mkdir(parents=True, exist_ok=True)
    return folder


def _write(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
