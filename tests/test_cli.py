"""The rlvrlab command: user mistakes give one clear line and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rlvrlab.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_list_names_every_experiment():
    result = invoke("list")
    assert result.exit_code == 0
    for name in ("mab", "contextual", "two-response", "collapse", "bounds", "phase", "stagnation", "controller"):
        assert name in result.output


def test_list_verbose_shows_settings_and_defaults():
    result = invoke("list", "-v")
    assert result.exit_code == 0
    assert "etas" in result.output and "(0.1, 1.0, 10.0)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "nope"), "allowed: bounds, collapse, contextual, controller, direction, leash, lm-grpo, mab, phase, stagnation, two-response"),
        (("run", "mab", "--set", "bogus=1"), "allowed: the settings of this experiment"),
        (("run", "mab", "--set", "steps=abc"), "allowed: an integer"),
        (("run", "mab", "--set", "etas=-0.1"), "finite numbers > 0"),
        (("run", "mab", "--set", "etas=inf"), "finite numbers > 0"),
        (("run", "collapse", "--set", "T_infs=1,40"), "integers in [1, 12]"),
        (("reproduce", "--only", "nope"), "allowed: bounds, collapse"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_no_traceback_from_the_installed_command():
    proc = subprocess.run([sys.executable, "-m", "rlvrlab.cli", "run", "mab", "--set", "steps=-3"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "steps: got -3; allowed: an integer >= 1" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_run_writes_the_run_directory(tmp_path):
    out = tmp_path / "mab"
    result = invoke("run", "mab", "--quick", "--set", "steps=60", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert {"config.json", "summary.json", "metrics.parquet", "figure4.png"} <= {p.name for p in out.iterdir()}
    assert "PASS" in result.output


def test_reproduce_writes_a_report_with_figures_and_checks(tmp_path):
    result = invoke("reproduce", "--quick", "--only", "two-response", "--only", "mab", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert 'src="two-response/two_response.png"' in html and 'src="mab/figure4.png"' in html
    assert "PASS" in html and "FAIL" not in html
    assert str(tmp_path / "report.html") in result.output


def test_resume_is_the_default_and_force_starts_over(tmp_path):
    out = tmp_path / "tr"
    assert invoke("run", "two-response", "--quick", "--set", "steps=30", "--out", str(out)).exit_code == 0
    first = (out / "summary.json").read_text()
    assert invoke("run", "two-response", "--quick", "--set", "steps=30", "--out", str(out), "--resume").exit_code == 0
    assert (out / "summary.json").read_text() == first  # read back, not rewritten
    refused = invoke("run", "two-response", "--quick", "--set", "steps=40", "--out", str(out))
    assert refused.exit_code == 2 and "--force" in refused.output
    assert invoke("run", "two-response", "--quick", "--set", "steps=40", "--out", str(out), "--force").exit_code == 0
    assert '"steps": 40' in (out / "config.json").read_text()
