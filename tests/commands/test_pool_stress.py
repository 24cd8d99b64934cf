"""``flask pool-stress`` through the test CLI runner, on the real server."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask

from poolkit import Poolkit
from poolkit.commands.pool_stress import format_progress, format_table, pool_stress_command
from poolkit.stress.runner import Progress


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(pool_stress_command, list(args))


@pytest.mark.parametrize(("args", "message"), [
    (["--strategy", "global,shared"], "unknown strategy 'shared'; choose from global, per-view"),
    (["--threads", "0"], "--threads must be between 1 and 512, not 0"),
    (["--seconds", "-1"], "--seconds must be more than 0"),
    (["--write", "--query", "SELECT 1"], "--query and --write choose different workloads"),
    (["--sweep", "1,two"], "--sweep: 'two' is not a pool size"),
    (["--sweep", "0,4"], "--sweep: pool sizes must be between 1 and 1000, not 0"),
    (["--sweep", "1,2", "--strategy", "global"], "--sweep runs the pooled strategy at each of "
                                                 "its sizes; drop --strategy"),
    (["--sweep", "1,2", "--pool-size", "4"], "drop --pool-size"),
])
def test_bad_option_is_one_line_and_exit_2(app: Flask, args: list[str], message: str) -> None:
    result = run(app, *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and message in lines[0]


def test_unknown_endpoint_exits_1_with_one_line(app: Flask) -> None:
    result = run(app, "--endpoint", "/nowhere", "--seconds", "0.1")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: --endpoint /nowhere: no GET view of the app matches that path "
        "(see 'flask routes')"]


def test_plot_without_matplotlib_says_what_to_install(app: Flask, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib → ImportError
    result = run(app, "--plot", str(tmp_path / "out.png"), "--strategy", "pooled")
    assert result.exit_code == 1
    assert result.output.strip() == ("Error: --plot needs matplotlib: "
                                     "pip install 'poolkit[plot]'")
    assert not (tmp_path / "out.png").exists()


def test_progress_line_format() -> None:
    line = format_progress(Progress(elapsed=3.02, strategy="pooled", threads=16, workers=1,
                                    req_per_s=4210.4, p95_ms=4.08, err_per_s=0.0))
    assert line == "[  3s ] pooled   thr 16  ok/s 4,210  p95 4.1 ms  err/s 0"
    line = format_progress(Progress(elapsed=1.0, strategy="global", threads=8, workers=2,
                                    req_per_s=10.0, p95_ms=1.0, err_per_s=3.0))
    assert line == "[  1s ] global   thr 2×8  ok/s 7  p95 1.0 ms  err/s 3"


def test_table_counts_successful_requests_per_second_apart_from_failures() -> None:
    # The run: global answered 462 req/s of which 92 % failed; per-view 53 ok/s.
    from test_stress import _report, _result

    report = _report(_result("global", 924, errors=850), _result("per-view", 106),
                     _result("pooled", 8000, pool_size=8))
    header, glob, per_view, pooled = format_table(report)[:4]
    assert header.split()[:4] == ["strategy", "requests", "ok/s", "failed"]
    assert glob.split()[:4] == ["global", "924", "37", "92%"]
    assert per_view.split()[:4] == ["per-view", "106", "53", "0"]
    assert pooled.split()[:4] == ["pooled", "8,000", "4,000", "0"]


@pytest.mark.stress
def test_table_verdicts_json_and_plot(app: Flask, tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "stress.json", tmp_path / "stress.png"
    result = run(app, "--seconds", "1", "--threads", "8", "--pool-size", "4",
                 "--json", str(out_json), "--plot", str(out_png))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["strategy", "requests", "ok/s", "failed"]
    assert [line.split()[0] for line in lines[1:4]] == ["global", "per-view", "pooled"]
    assert any(line.startswith("global: ") for line in lines)
    assert any(line.startswith("per-view: ") for line in lines)
    assert any(line.startswith("pooled: 0 errors, 0 wrong rows") for line in lines)
    assert "[" not in result.output.split("\n", 1)[0]  # no progress line: stderr is no tty
    data = json.loads(out_json.read_text())
    assert list(data["strategies"]) == ["global", "per-view", "pooled"]
    glob, per_view, pooled = (data["strategies"][k] for k in ("global", "per-view", "pooled"))
    assert glob["wrong_rows"] + glob["lost_rows"] + glob["errors"] > 0
    assert per_view["server_connections"] >= per_view["requests"] > 0
    assert pooled["errors"] == pooled["wrong_rows"] == 0
    assert pooled["connections_opened"] <= 4
    assert [v["strategy"] for v in data["verdicts"]] == ["global", "per-view", "pooled"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lines[-2:] == [f"wrote {out_json}", f"wrote {out_png}"]
    assert "latency in ms of successful requests" in result.output


@pytest.mark.stress
def test_sweep_table_advice_json_and_plot(app: Flask, tmp_path: Path) -> None:
    out_json, out_png = tmp_path / "sweep.json", tmp_path / "sweep.png"
    result = run(app, "--sweep", "1,2", "--seconds", "0.5", "--threads", "4",
                 "--json", str(out_json), "--plot", str(out_png))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["pool", "requests", "ok/s", "p50"]
    assert [line.split()[0] for line in lines[1:3]] == ["1", "2"]
    data = json.loads(out_json.read_text())
    advised = data["sweep"]["recommended_pool_size"]
    assert advised in (1, 2)
    assert [p["pool_size"] for p in data["sweep"]["points"]] == [1, 2]
    assert any(line.startswith(f"recommended pool size: {advised} — ") for line in lines)
    rule = data["sweep"]["rule_of_thumb"]
    assert any(line.startswith("HikariCP's rule of thumb for this server: "
                               f"{rule['cores']} cores × 2 + 1 spindle = {rule['pool_size']} "
                               "connections") for line in lines)
    assert lines[-2:] == [f"wrote {out_json}", f"wrote {out_png}"]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    quiet = run(app, "-q", "--sweep", "2", "--seconds", "0.3", "--threads", "2")
    assert quiet.exit_code == 0, quiet.output
    assert [line.split(":")[0] for line in quiet.output.splitlines()] == [
        "recommended pool size", "HikariCP's rule of thumb for this server"]


@pytest.mark.stress
def test_quiet_prints_only_the_verdicts(app: Flask) -> None:
    result = run(app, "-q", "--strategy", "pooled", "--seconds", "0.5", "--threads", "4")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("pooled: 0 errors")
    assert len(result.output.strip().splitlines()) == 1


def test_password_is_never_printed(database_url: str) -> None:
    app = Flask("wrong_password")
    user = database_url.split("://", 1)[1].split(":", 1)[0]
    app.config["POOLKIT_DATABASE_URL"] = re.sub(r"://[^@]*@", f"://{user}:s3cret@", database_url,
                                                count=1)
    extension = Poolkit(app)
    try:
        result = run(app, "--strategy", "pooled", "--seconds", "0.2", "-v")
    finally:
        extension.close()
    assert result.exit_code == 1
    assert "s3cret" not in result.output
    assert result.output.startswith(f"Error: cannot connect to mysql://{user}:***@")
