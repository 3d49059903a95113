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


def test_adding_a_model_under_a_declared_name_is_refused_before_any_work():
    result = run_cli("models", "add", "spend", "--table", "usage", "--key", "subscriber_id", "--label-table",
                     "spend_labels", "--label", "spend_next_30d", "--first", "2026-01-01", "--last", "2026-01-31")
    assert result.returncode == 2
    assert "a model named spend is already declared in" in result.stderr and "Traceback" not in result.stderr


def test_a_command_without_a_model_name_names_the_declared_ones():
    result = run_cli("score", "--date", "2026-03-01")
    assert result.returncode == 2
    assert "declares the models churn, spend: name one with --model-name" in result.stderr
