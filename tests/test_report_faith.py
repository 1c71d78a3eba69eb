"""The report's faithfulness section (issue 14): the deletion test the decisions carry (method vs
random, newest bar apart) and winners vs losers with a permutation test, in report.html and a PNG."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np

from bot.domain import Decision, DecisionStatus
from bot.report import write_report
from bot.report.data import load_report_data
from bot.report.faith import faith_view
from storage import queries as q
from storage.db import open_database
from storage.journal import Journal
from tests.explain_fixtures import EXPLANATIONS, FAITH, WINDOW, H, T, contract


def _journal(url: str, differ: bool, n: int = 8) -> str:
    """A dsc run with ``n`` winning and ``n`` losing trades; winners weigh bar t-2, losers t-10 if ``differ``."""
    engine = open_database(url)
    j = Journal.start_run(engine, mode="backtest", strategy="dsc", symbol="BTCUSDT", timeframe="1h",
                          category="linear", config={}, initial_cash=10_000, data_source=None)
    rng = np.random.default_rng(1)
    for i in range(2 * n):
        win = i % 2 == 0
        steps = list(np.round(rng.uniform(0.001, 0.002, WINDOW), 4)) if differ else [0.001] * WINDOW
        steps[WINDOW - (3 if win or not differ else 11)] = 0.05
        expl = {**EXPLANATIONS["dsc"], "attribution": contract(
            "signed_grad_x_input", "up", "p(up) - p(down)", [float(x) for x in steps],
            {"rsi_14": 0.03 if win or not differ else -0.03, "ret_1": 0.01})}
        bar = T + i * 10 * H
        did = f"{j.run_id}-{bar}"
        j.record_decision(did, Decision("BTCUSDT", bar, 1.0, 0.56, "m1", expl), 64_000.0, DecisionStatus.ORDER)
        pnl = Decimal("12.5") if win else Decimal("-9.5")
        j.record_trade({"id": f"{j.run_id}-t{i}", "symbol": "BTCUSDT", "direction": "long", "qty": Decimal("0.1"),
                        "entry_time": bar + H, "exit_time": bar + 5 * H, "entry_price": Decimal("64000"),
                        "exit_price": Decimal("64100"), "gross_pnl": pnl, "fees": Decimal("0"), "net_pnl": pnl,
                        "return_pct": 0.1, "bars_held": 4, "entry_decision_id": did, "exit_decision_id": None})
    j.finish("completed", {})
    return j.run_id


def _view(url: str, run_id: str):  # noqa: ANN202 - the view under test
    db = open_database(url)
    return faith_view(load_report_data(db, q.resolve_run(db, run_id)))


def test_deletion_block_and_profiles_that_differ(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    v = _view(url, _journal(url, differ=True))
    assert v is not None and v.target == "p(up) - p(down)" and v.toward == "up"
    [d] = v.deletion
    assert (d.method, d.decisions, d.k, d.windows, d.rank) == ("signed gradient x input", 16, 5, 2000, 1)
    assert (d.top_k, d.random_k, d.newest) == (FAITH["older_top_k_drop"], FAITH["older_random_k_drop"],
                                               FAITH["newest_drop"])
    w = v.winloss
    assert (w.n_win, w.n_loss) == (8, 8) and w.steps_win is not None and len(w.steps_win) == WINDOW - 1
    assert int(np.argmax(w.steps_win)) == WINDOW - 3 and int(np.argmax(w.steps_loss)) == WINDOW - 11
    assert w.p_steps is not None and w.p_steps < 0.01 and w.p_features is not None and w.p_features < 0.01
    assert w.sentence.startswith("Winning and losing entries differ in what the model weighted (older-step "
                                 "profile: p = 0.00")
    assert "3.1x" in v.note


def test_an_honest_sentence_when_they_do_not_differ_and_the_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    run_id = _journal(url, differ=False)
    v = _view(url, run_id)
    assert v is not None and v.winloss.p_steps == 1.0 and v.winloss.p_features == 1.0
    assert v.winloss.sentence.startswith("Winning and losing entries do not differ in what the model weighted")
    res = write_report(open_database(url), run_id, tmp_path / "out")
    assert "faithfulness" in res.sections and "fig-faith" in res.figures and "fig-faith-features" in res.figures
    page = (tmp_path / "out" / "report.html").read_text()
    assert "do not differ in what the model weighted" in page and "masking its top 5 older candles" in page
    png = tmp_path / "out" / "faithfulness.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_no_section_without_a_contract_attribution(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'j.db'}"
    engine = open_database(url)
    j = Journal.start_run(engine, mode="backtest", strategy="rollout", symbol="BTCUSDT", timeframe="1h",
                          category="linear", config={}, initial_cash=10_000, data_source=None)
    j.record_decision(f"{j.run_id}-1", Decision("BTCUSDT", T, 1.0, 0.5, "m1", EXPLANATIONS["old_rollout"]),
                      64_000.0, DecisionStatus.ORDER)
    j.finish("completed", {})
    assert _view(url, j.run_id) is None
    res = write_report(open_database(url), j.run_id, tmp_path / "out", png=False)
    assert "faithfulness" not in res.sections and "model-rollout" in res.sections
