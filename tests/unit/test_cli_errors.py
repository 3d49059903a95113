import subprocess
import sys


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "jobs", *args], capture_output=True, text=True, timeout=120)


def test_a_malformed_date_is_one_clear_line_and_a_nonzero_exit():
    result = run_cli("score", "--date", "2026-13-01")
    assert result.returncode == 2
    assert result.stderr.strip() == "batchloop: error: --date '2026-13-01' is not a date: use YYYY-MM-DD"
    assert "Traceback" not in result.stderr


def test_a_path_instead_of_a_registry_reference_is_refused_before_any_work():
    result = run_cli("score", "--date", "2026-03-01", "--model", "/tmp/evil.pkl")
    assert result.returncode == 2
    assert "models:/<name>/<version>" in result.stderr
