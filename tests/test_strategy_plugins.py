"""A strategy in one file outside the project runs through the real ``bot`` command: backtest, paper
replay, ``journal explain`` and ``journal report``, with nothing added to the project; a file that
cannot be loaded is one line, exit code 2, and no run in the journal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from storage import queries as q
from storage.db import open_database
from tests.test_report_cdp import check_pages

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "strategies" / "rsi.py"


def bot(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real entry point in a child process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300, check=False)


def outside(tmp: Path) -> Path:
    """A copy of the example strategy in ``tmp``, which must not be inside the project."""
    assert not tmp.resolve().is_relative_to(ROOT), tmp
    path = tmp / "rsi.py"
    shutil.copy(EXAMPLE, path)
    return path


@pytest.fixture(scope="module")
def rsi_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, str]:
    """One CLI backtest of the copied example over the whole real BTCUSDT 1h file."""
    tmp = tmp_path_factory.mktemp("user_strategies")
    path = outside(tmp)
    url = f"sqlite:///{tmp / 'j.db'}"
    r = bot("backtest", "--strategy", f"{path}:RsiReversion", "--data", str(data_dir / "bybit_BTCUSDT_1h.csv.gz"),
            "--db", url, "--json", cwd=tmp)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    return {"url": url, "run_id": summary["run_id"], "name": f"{path}:RsiReversion", "tmp": str(tmp),
            "summary": r.stdout}


def test_backtest_journals_the_file_strategy_and_its_explanations(rsi_run: dict[str, str]) -> None:
    summary = json.loads(rsi_run["summary"])
    assert summary["strategy"] == rsi_run["name"] and summary["candles"] == 19_261 and summary["n_trades"] > 10
    db = open_database(rsi_run["url"])
    run = q.resolve_run(db, rsi_run["run_id"])
    assert run["strategy"] == rsi_run["name"] and run["status"] == "completed"  # the path finds the spec again
    decisions = q.decisions(db, rsi_run["run_id"])
    assert len(decisions) >= 2 * summary["n_trades"] - 1
    for d in decisions:
        e = d["explanation"]
        assert e["kind"] == "rsi" and 0.0 <= e["rsi"] <= 100.0 and (e["lower"], e["upper"]) == (30.0, 70.0)
        # The rule follows the journaled RSI: below the lower band long, above the upper band flat.
        if d["target"] == 1.0:
            assert e["rsi"] < 30 and e["rule"] == "rsi < 30 -> long"
        else:
            assert d["target"] == 0.0 and e["rsi"] > 70 and e["rule"] == "rsi > 70 -> flat"


def test_journal_explain_shows_the_file_strategys_reasons(rsi_run: dict[str, str]) -> None:
    db = open_database(rsi_run["url"])
    entry = next(d for d in q.decisions(db, rsi_run["run_id"]) if d["status"] == "order" and d["target"] == 1.0)
    r = bot("journal", "explain", entry["id"], "--db", rsi_run["url"], cwd=Path(rsi_run["tmp"]))
    assert r.returncode == 0, r.stderr
    # The SPEC's reasons function, the run's path:Class name, and the order the decision caused.
    assert f"RSI {entry['explanation']['rsi']:.1f} (bands 30.0/70.0)" in r.stdout
    assert "rule: rsi < 30 -> long" in r.stdout and rsi_run["name"] in r.stdout
    order = q.orders_for_decision(db, entry["id"])[0]
    assert order["id"] in r.stdout and "filled" in r.stdout


def test_journal_report_draws_the_generic_section_with_the_strategys_reasons(rsi_run: dict[str, str],
                                                                             tmp_path: Path) -> None:
    out = tmp_path / "report"
    r = bot("journal", "report", "--run", rsi_run["run_id"], "--out", str(out), "--db", rsi_run["url"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "equity.png", "generic.png", "monthly.png", "price.png", "report.html", "summary.png"]
    page = (out / "report.html").read_text()
    manifest = json.loads(page.split('id="report-manifest">')[1].split("</script>")[0])
    assert manifest["kind"] == "generic" and "model-generic" in manifest["sections"]
    assert manifest["figures"] == ["fig-equity", "fig-price", "fig-monthly", "fig-generic"]
    assert "RSI " in page and "rule: rsi &lt; 30 -&gt; long" in page  # trade list: why each trade entered
    assert "The generic section stands in" not in page  # the file is still there: no fallback note
    # The generic figures draw in a real browser like the built-in sections do.
    result = check_pages({"rsi": out / "report.html"}, tmp_path, set())["rsi"]
    assert result.errors == [] and result.probe["manifest"]["figures"][-1] == "fig-generic"
    assert all(f["rendered"] and f["traces"] >= 1 and f["drawn"] >= 1 for f in result.probe["figs"])


def test_report_falls_back_to_generic_reasons_when_the_file_is_gone(data_dir: Path, tmp_path: Path) -> None:
    path = outside(tmp_path)
    url = f"sqlite:///{tmp_path / 'j.db'}"
    r = bot("backtest", "--strategy", f"{path}:RsiReversion", "--data", str(data_dir / "bybit_BTCUSDT_1h.csv.gz"),
            "--from", "2024-01-01", "--to", "2024-04-01", "--db", url, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path.unlink()
    out = tmp_path / "report"
    r = bot("journal", "report", "--out", str(out), "--no-png", "--db", url, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = (out / "report.html").read_text()
    assert 'id="model-generic"' in page and 'id="fig-generic"' in page
    assert "The generic section stands in for this run&#x27;s strategy" in page and "not found" in page
    # Generic reasons: the explanation's rule first, then its other scalar keys.
    assert "rule: rsi &lt; 30 -&gt; long; rsi: " in page


def test_paper_replay_runs_the_file_strategy_like_the_backtest(data_dir: Path, tmp_path: Path) -> None:
    path = outside(tmp_path)
    db = f"sqlite:///{tmp_path / 'j.db'}"
    common = ["--strategy", f"{path}:RsiReversion", "--data", str(data_dir / "bybit_BTCUSDT_1h.csv.gz"),
              "--from", "2025-01-01", "--to", "2025-04-01", "--db", db, "--json"]
    a = bot("backtest", *common, cwd=tmp_path)
    b = bot("run", "--mode", "paper", "--feed", "replay", "--speed", "0", *common, cwd=tmp_path)
    assert a.returncode == 0 and b.returncode == 0, (a.stderr, b.stderr)
    ra, rb = json.loads(a.stdout)["run_id"], json.loads(b.stdout)["run_id"]
    engine = open_database(db)
    run = q.resolve_run(engine, rb)
    assert run["mode"] == "paper" and run["strategy"] == f"{path}:RsiReversion"

    def rows(run_id: str) -> list[tuple]:
        return [(d["bar_time"], d["target"], d["explanation"]["rsi"]) for d in q.decisions(engine, run_id)]

    assert rows(rb) == rows(ra) and len(rows(ra)) > 4


# -- files that cannot be loaded -------------------------------------------------------------------
BROKEN = {
    "syntax.py": "def broken(:\n",
    "imports.py": "import no_such_module_for_this_test\n",
    "plain.py": "class NotAStrategy:\n    pass\n",
    "raises.py": ("from strategies.base import Strategy\n\n\nclass Raises(Strategy):\n    name = 'raises'\n\n"
                  "    def __init__(self, params, ctx):\n        raise ValueError('no such band: -1')\n\n"
                  "    def on_bar(self, bars):\n        return None\n"),
    "notes.txt": "not python\n",
}
BAD = {
    "file missing": (["--strategy", "{tmp}/missing.py:RsiReversion"], ["missing.py", "not found"]),
    "not a .py file": (["--strategy", "{tmp}/notes.txt:RsiReversion"], ["notes.txt is not a .py file"]),
    "syntax error": (["--strategy", "{tmp}/syntax.py:Broken"], ["syntax.py:Broken", "syntax error in", "line 1"]),
    "import error": (["--strategy", "{tmp}/imports.py:X"], ["imports.py", "No module named 'no_such_module_for"]),
    "class missing": (["--strategy", "{tmp}/rsi.py:Nope"], ["rsi.py defines no class 'Nope'"]),
    "not a Strategy": (["--strategy", "{tmp}/plain.py:NotAStrategy"],
                       ["NotAStrategy in", "plain.py is not a Strategy subclass"]),
    "constructor raises": (["--strategy", "{tmp}/raises.py:Raises"],
                           ["raises.py:Raises: constructor failed: ValueError: no such band: -1"]),
    "bad parameter": (["--strategy", "{tmp}/rsi.py:RsiReversion", "--set", "strategy.params.lower=80"],
                      ["lower must be below upper"]),
    "unknown parameter": (["--strategy", "{tmp}/rsi.py:RsiReversion", "--set", "strategy.params.perod=3"],
                          ["strategy.params.perod: unknown parameter"]),
    "unknown name": (["--strategy", "rsi"], ["unknown strategy 'rsi'", "path/to/file.py:ClassName"]),
}


def _good_csv(tmp: Path) -> Path:
    p = tmp / "good.csv"
    p.write_text("timestamp,open,high,low,close,volume\n"
                 + "".join(f"{1700006400000 + i * 3600000},100,106,98,{100 + i % 5},1\n" for i in range(60)))
    return p


#: Every case in a backtest; paper replay builds the strategy through the same registry, three prove it.
MODES = [("backtest", c) for c in BAD] + [("paper", c) for c in ("file missing", "syntax error", "constructor raises")]


@pytest.mark.parametrize(("mode", "case"), MODES)
def test_a_strategy_that_cannot_load_is_one_line_exit_2_and_no_run(case: str, mode: str, tmp_path: Path) -> None:
    outside(tmp_path)
    for name, body in BROKEN.items():
        (tmp_path / name).write_text(body)
    args, expected = BAD[case]
    args = [a.format(tmp=tmp_path) for a in args]
    db_path = tmp_path / "j.db"
    cmd = ["backtest"] if mode == "backtest" else ["run", "--mode", "paper", "--feed", "replay"]
    r = bot(*cmd, *args, "--data", str(_good_csv(tmp_path)), "--db", f"sqlite:///{db_path}", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    if db_path.exists():
        assert q.list_runs(open_database(f"sqlite:///{db_path}")) == []
