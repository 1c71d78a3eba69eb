"""The strategy registry: built-ins by name without importing torch, installed entry points, files
with their own report and summary sections, and what a run's report falls back to."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.config import Config, StrategyConfig
from bot.errors import ConfigError
from bot.report import write_report
from bot.report.data import load_report_data
from bot.report.reasons import reasons
from bot.report.section import ReportSection
from bot.report.sections import GENERIC, SMA, for_run
from storage import queries as q
from storage.db import open_database
from storage.journal import Journal
from strategies import GROUP, create_strategy, get_spec, names
from strategies.base import StrategyContext
from strategies.files import load_file_spec
from strategies.registry import BUILTINS
from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "strategies" / "rsi.py"
CTX = StrategyContext("BTCUSDT", "1h", long_only=False)
MODEL_TOOLS = {"dsc": "models.dsc_train", "rollout": "models.rollout_train", "gru_sizer": "models.gru_training"}


def backtest(*args: str) -> str:
    res = CliRunner().invoke(app, ["backtest", *args], terminal_width=200)
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.stdout


# -- built-ins ---------------------------------------------------------------------------------------
#: The walk-forward baselines: no report section or reasons of their own (the generic ones,
#: as for a strategy of one's own file).
BASELINES = ("buy_hold", "vol_only")


@pytest.mark.parametrize("name", BASELINES)
def test_baselines_resolve_without_sections_of_their_own(name: str) -> None:
    spec = get_spec(name)
    assert spec.name == name == spec.cls.name and spec.params is spec.cls.Params
    assert spec.report is None and spec.reasons is None and spec.trainer is None


@pytest.mark.parametrize("name", [n for n in BUILTINS if n not in BASELINES])
def test_builtins_resolve_with_their_tools_sections_and_reasons(name: str) -> None:
    spec = get_spec(name)
    assert spec.name == name == spec.cls.name and spec.params is spec.cls.Params
    section = spec.resolve("report")
    assert isinstance(section, ReportSection) and section.key == name
    assert all(callable(section.part(p)) for p in ("view", "figures", "png"))
    assert callable(spec.resolve("reasons"))
    if name in MODEL_TOOLS:
        train, evaluate = spec.resolve("trainer"), spec.resolve("evaluator")
        assert (train.__module__, train.__name__) == (MODEL_TOOLS[name], "train")
        assert (evaluate.__module__, evaluate.__name__) == (MODEL_TOOLS[name], "evaluate")
    else:
        assert spec.trainer is None and spec.evaluator is None
    summary = spec.resolve("summary_section")
    assert (summary is not None) == (name == "rollout")  # rollout prints its attention section


def test_a_strategy_without_a_trainer_says_so_in_one_line() -> None:
    from bot.cli.models import train_command

    expected = r"^strategy 'sma' has no model to train; trainable: dsc, rollout, gru_sizer$"
    with pytest.raises(ConfigError, match=expected):
        train_command(Config(strategy=StrategyConfig(name="sma")), None, None)


def test_listing_and_loading_light_strategies_imports_no_torch_or_plotting() -> None:
    code = ("import sys, strategies; from strategies.files import load_file_spec\n"
            "assert strategies.names()[:4] == ['sma', 'dsc', 'rollout', 'gru_sizer'], strategies.names()\n"
            "strategies.get_spec('sma'); load_file_spec(sys.argv[1] + ':RsiReversion')\n"
            "print(sorted(m for m in ('torch', 'plotly', 'matplotlib', 'bot.report', 'bot.cli') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


# -- entry points ------------------------------------------------------------------------------------
@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed-looking plugin: a real module on sys.path and entry points naming it."""
    shutil.copy(EXAMPLE, tmp_path / "acme_strategies.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = importlib.metadata.EntryPoints([
        importlib.metadata.EntryPoint("acme_rsi", "acme_strategies:RsiReversion", GROUP),
        importlib.metadata.EntryPoint("acme_spec", "acme_strategies:SPEC", GROUP),
        importlib.metadata.EntryPoint("acme_broken", "acme_no_such_module:Thing", GROUP),
        importlib.metadata.EntryPoint("acme_odd", "acme_strategies:rsi_reasons", GROUP),
    ])
    real = importlib.metadata.entry_points

    def entry_points(**params):  # type: ignore[no-untyped-def]
        return eps if params.get("group") == GROUP else real(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    return "acme_strategies"


def test_entry_points_are_found_by_name(plugin: str) -> None:
    module = importlib.import_module(plugin)
    assert {"acme_rsi", "acme_spec"} <= set(names())
    by_class, by_spec = get_spec("acme_rsi"), get_spec("acme_spec")
    assert by_class.cls is module.RsiReversion and by_class.name == "acme_rsi" and by_class.reasons is None
    # A spec is renamed after its entry point: the journal's name must find it again.
    assert by_spec.name == "acme_spec" and by_spec.reasons is module.rsi_reasons
    strategy = create_strategy("acme_spec", {"period": 7}, CTX)
    assert strategy.name == "acme_spec" and strategy.warmup == 8


def test_a_broken_entry_point_is_one_line(plugin: str) -> None:
    with pytest.raises(ConfigError, match=r"^strategy acme_broken: entry point acme_no_such_module:Thing cannot be "
                                          r"loaded: ModuleNotFoundError: No module named 'acme_no_such_module'$"):
        get_spec("acme_broken")
    with pytest.raises(ConfigError, match=r"^strategy acme_odd: entry point acme_strategies:rsi_reasons is a "
                                          r"function, not a Strategy subclass or a StrategySpec$"):
        get_spec("acme_odd")


def test_an_entry_point_strategy_backtests_and_reports(plugin: str, btc_1h: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    out = backtest("--strategy", "acme_spec", "--data", str(btc_1h), "--from", "2024-01-01", "--to", "2024-06-01",
                   "--db", url, "--json")
    run_id = json.loads(out)["run_id"]
    db = open_database(url)
    run = q.resolve_run(db, run_id)
    assert run["strategy"] == "acme_spec"
    d = load_report_data(db, run)
    entry = next(x for x in d.decisions if x["target"] == 1.0)
    assert d.section is GENERIC and d.why(entry)[0] == f"RSI {entry['explanation']['rsi']:.1f} (bands 30.0/70.0)"


# -- files -------------------------------------------------------------------------------------------
def test_files_of_the_same_name_load_side_by_side_and_reload_when_changed(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "rsi.py", tmp_path / "b" / "rsi.py"
    for p in (a, b):
        p.parent.mkdir()
        shutil.copy(EXAMPLE, p)
    sa, sb = load_file_spec(f"{a}:RsiReversion"), load_file_spec(f"{b}:RsiReversion")
    assert sa.name == f"{a}:RsiReversion" and sb.name == f"{b}:RsiReversion"
    assert sa.cls is not sb.cls and sa.cls.__module__ != sb.cls.__module__
    assert load_file_spec(f"{a}:RsiReversion").cls is sa.cls  # unchanged: not executed again
    a.write_text(a.read_text().replace('name = "rsi"', 'name = "rsi2"'))
    assert load_file_spec(f"{a}:RsiReversion").cls.name == "rsi2"
    # The file's SPEC is for RsiReversion; naming the file alone uses it.
    assert load_file_spec(str(b)).reasons is sys.modules[sb.cls.__module__].rsi_reasons


PLUGIN = '''
import plotly.graph_objects as go

from bot.domain import Decision
from bot.report.section import ReportSection
from strategies.base import Strategy
from strategies.spec import StrategySpec


class Flip(Strategy):
    """Long every other day, flat in between."""

    name = "flip"

    def on_bar(self, bars):
        if bars.n % 24:
            return None
        day = bars.n // 24
        return Decision(bars.symbol, bars.last_time(), float(day % 2), 0.5, explanation={"kind": "flip", "day": day})


def view(d):
    return [r["explanation"]["day"] for r in d.decisions if "day" in r["explanation"]] or None


def figures(d, days, theme):
    return {"fig-flip-days": go.Figure(go.Scatter(y=days))}


def png(d, days, theme, fig):
    fig.add_subplot().plot(days, lw=3)


def summary(console, db, run_id):
    console.print(f"flip section for run {run_id}")


SPEC = StrategySpec(name="flip", cls=Flip, reasons=lambda e: [f"day {e['day']} of the flip"], summary_section=summary,
                    report=ReportSection("flip", "Flip: the days", view=view, figures=figures, png=png))
'''


def test_a_file_brings_its_own_report_and_summary_sections(btc_1h: Path, tmp_path: Path) -> None:
    path = tmp_path / "flip.py"
    path.write_text(PLUGIN)
    url = f"sqlite:///{tmp_path / 'j.db'}"
    out = backtest("--strategy", f"{path}:Flip", "--data", str(btc_1h), "--from", "2024-01-01", "--to", "2024-02-01",
                   "--db", url)
    run_id = q.resolve_run(open_database(url), "latest")["id"]
    assert f"flip section for run {run_id}" in out
    res = write_report(open_database(url), run_id, tmp_path / "report")
    assert "model-flip" in res.sections and "fig-flip-days" in res.figures
    assert [p.name for p in res.pngs][-1] == "flip.png"
    assert "day 3 of the flip" in res.html.read_text()  # the trade list's "why", by the file's reasons


# -- what a run's report falls back to ---------------------------------------------------------------
def test_report_section_by_journaled_name_then_by_explanation_kind() -> None:
    assert for_run("sma", []).section is SMA and for_run("sma", []).note == ""
    # A strategy the registry no longer knows: its decisions' kind names a registered one.
    assert for_run("gone_plugin", [{"explanation": {"kind": "sma"}}]).section is SMA
    fallback = for_run("gone_plugin", [{"explanation": {"kind": "rsi", "rule": "r"}}])
    assert fallback.section is GENERIC and "unknown strategy 'gone_plugin'" in fallback.note
    assert fallback.reasons({"kind": "rsi", "rule": "r", "rsi": 25.04}) == ["rule: r", "rsi: 25.04"]


def test_an_explanation_kind_is_never_loaded_as_a_file(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\n")
    assert reasons({"kind": f"{evil}:X", "rule": "r"}) == ["rule: r"]
    assert for_run("gone_plugin", [{"explanation": {"kind": f"{evil}:X"}}]).section is GENERIC
    assert not marker.exists()


def test_a_file_strategys_long_name_is_journaled_on_postgresql() -> None:
    name = "/home/trader/" + "deeply/nested/" * 6 + "strategies/rsi_reversion.py:RsiReversion"
    db = open_database(PG_URL)
    j = Journal.start_run(db, mode="backtest", strategy=name, symbol="BTCUSDT", timeframe="1h", category="linear",
                          config={}, initial_cash=10_000, data_source="test")
    j.finish("completed", {})
    assert len(name) > 100 and q.resolve_run(db, j.run_id)["strategy"] == name
