"""``bot journal explain ID --method M``: the strategy is rebuilt from the run's journaled config and
asked for another attribution over the run's candles up to the decision bar (``explain_with``); a
strategy without it is one clear line and exit 2. The real model strategies' explain_with is
tested with them; here a small plugin file stands in."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from storage import queries as q
from storage.db import open_database
from tests.explain_fixtures import write_candles

runner = CliRunner()

PLUGIN = '''
from bot.domain import Decision
from strategies.base import Strategy


class Momentum(Strategy):
    """Long after an up bar; explains itself by the last 4 bars' returns ("returns") or their ranges."""

    name = "momentum"

    @property
    def warmup(self):
        return 5

    def _attribution(self, bars, method):
        if method not in ("returns", "ranges"):
            raise ValueError(f"unknown method {method!r}: expected returns or ranges")
        o, c, h, lo = bars.open[-4:], bars.close[-4:], bars.high[-4:], bars.low[-4:]
        vals = (c / o - 1) if method == "returns" else (h - lo) / o
        return {"method": method, "toward": "up" if method == "returns" else None, "target": "target",
                "steps": [round(float(v), 6) for v in vals], "bar_ms": 3600000,
                "features": {"last_close": round(float(c[-1]), 2)}, "faithfulness": None}

    def on_bar(self, bars):
        up = bars.close[-1] > bars.open[-1]
        return Decision(bars.symbol, bars.last_time(), 1.0 if up else 0.0, 0.5, None,
                        {"kind": "momentum", "rule": {"text": "last bar up -> long" if up else "last bar down -> flat"},
                         "attribution": self._attribution(bars, "returns")})

    def explain_with(self, bars, method):
        return self._attribution(bars, method)
'''


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("method")
    candles = write_candles(d / "bybit_BTCUSDT_1h.csv")
    plugin = d / "momentum.py"
    plugin.write_text(PLUGIN)
    url = f"sqlite:///{d / 'journal.db'}"
    for strategy in (f"{plugin}:Momentum", "sma"):
        res = runner.invoke(app, ["backtest", "--strategy", strategy, "--data", str(candles), "--db", url,
                                  "--set", "strategy.params.fast=3", "--set", "strategy.params.slow=6"]
                            if strategy == "sma" else
                            ["backtest", "--strategy", strategy, "--data", str(candles), "--db", url])
        assert res.exit_code == 0, res.output + repr(res.exception)
    db = open_database(url)
    runs = {r["strategy"]: r["id"] for r in q.list_runs(db)}
    out = {"url": url}
    for name, key in ((f"{plugin}:Momentum", "plugin"), ("sma", "sma")):
        decisions = [x for x in q.decisions(db, runs[name]) if x.get("explanation")]
        out[key] = decisions[-1]["id"]
        out[f"{key}_decision"] = json.dumps(decisions[-1]["explanation"])
    return out


def test_method_recomputes_over_the_run_candles(run: dict[str, str]) -> None:
    res = runner.invoke(app, ["journal", "explain", run["plugin"], "--method", "ranges", "--format", "json",
                              "--db", run["url"]])
    assert res.exit_code == 0, res.output + repr(res.exception)
    got = json.loads(res.stdout)["decision"]["explanation"]["attribution"]
    stored = json.loads(run["plugin_decision"])["attribution"]
    assert got["method"] == "ranges" and got["toward"] is None and len(got["steps"]) == 4
    assert got["features"] == stored["features"]  # the same bars up to the decision bar: the same last close
    assert all(v > 0 for v in got["steps"]) and got["steps"] != stored["steps"]
    table = runner.invoke(app, ["journal", "explain", run["plugin"], "--method", "ranges", "--db", run["url"]],
                          terminal_width=200)
    assert table.exit_code == 0, table.output
    assert "attribution recomputed with --method ranges (stored: returns)" in table.output
    assert "weight (unsigned" in table.output and "method: ranges; no faithfulness score stored" in table.output


@pytest.mark.parametrize(("which", "method", "message"), [
    ("sma", "rollout", "error: strategy sma cannot recompute its attribution (it has no explain_with); "
                       "only the stored one can be shown"),
    ("plugin", "nope", "error: --method nope: ValueError: unknown method 'nope': expected returns or ranges"),
])
def test_without_explain_with_or_a_bad_method_one_clear_line(run: dict[str, str], which: str, method: str,
                                                            message: str) -> None:
    res = subprocess.run([sys.executable, "-c", "from bot.cli import main; main()", "journal", "explain",
                          run[which], "--method", method, "--db", run["url"]],
                         capture_output=True, text=True, timeout=180, cwd=Path(__file__).parent.parent)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == message
