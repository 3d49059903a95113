import subprocess
import sys

from tests.conftest import ROOT


def preflight(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["/bin/bash", str(ROOT / "infra" / "preflight.sh"), sys.executable], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_missing_java_is_one_clear_message(tmp_path):
    result = preflight({"PATH": str(tmp_path)})
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: Java was not found. Spark needs Java 17 or 21")
    assert "apt-get install openjdk-17-jre-headless" in result.stderr


def test_an_old_java_is_named(tmp_path):
    fake = tmp_path / "java"
    fake.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    fake.chmod(0o755)
    result = preflight({"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert result.returncode == 1 and "error: Java 11 found" in result.stderr


def test_a_missing_python_is_one_clear_message(tmp_path):
    result = subprocess.run(["/bin/bash", str(ROOT / "infra" / "preflight.sh"), "python3.11-not-here"],
                            env={"PATH": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "python3.11-not-here was not found" in result.stderr


def test_this_machine_passes():
    import os

    assert preflight(dict(os.environ)).returncode == 0
