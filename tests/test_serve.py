"""``bot serve``: the read-only journal API over real uvicorn and httpx, against real runs.

Every endpoint, paging newest first, 404 for an unknown run, the token rules, the CLI's refusal
to listen beyond loopback without a token, and no answer ever carrying the journaled password.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.api import create_app
from bot.report import write_report
from bot.summary import journal_summary, replay_fills
from storage import queries as q
from storage.db import open_database
from tests.serve_helpers import PASSWORD, TOKEN, Journal, journal, serving

ROOT = Path(__file__).resolve().parents[1]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")
PER_RUN = ["", "/summary", "/equity", "/positions", "/trades", "/orders", "/fills", "/decisions", "/events", "/alerts"]


@pytest.fixture(scope="module")
def j() -> Journal:
    return journal()


@pytest.fixture(scope="module")
def api(j: Journal) -> Iterator[httpx.Client]:
    with serving(create_app(j.url)) as base, httpx.Client(base_url=base, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def guarded(j: Journal) -> Iterator[httpx.Client]:
    with serving(create_app(j.url, TOKEN)) as base, httpx.Client(base_url=base, timeout=120) as client:
        yield client


def get(client: httpx.Client, path: str, status: int = 200, **params: Any) -> Any:
    r = client.get(path, params=params)
    assert r.status_code == status, (path, r.status_code, r.text[:300])
    return r.json()


def test_runs_newest_first_without_config(api: httpx.Client, j: Journal) -> None:
    page = get(api, "/api/runs")
    assert page["total"] == 4
    assert [r["id"] for r in page["items"]] == [j.ids[k] for k in ("paper", "portfolio", "kill", "backtest")]
    first = page["items"][0]
    assert first["mode"] == "paper" and first["status"] == "completed" and first["markets"] == ["BTCUSDT"]
    assert "config" not in first and "strategy_state" not in first
    assert ISO.match(first["started_at"]) and ISO.match(first["first_bar"]) and first["initial_cash"] == "10000"
    second = get(api, "/api/runs", limit=1, offset=2)
    assert second["total"] == 4 and [r["id"] for r in second["items"]] == [j.ids["kill"]]
    assert get(api, "/api/runs")["items"][1]["markets"] == ["BTCUSDT", "ETHUSDT"]


def test_every_endpoint_answers_with_iso_times_and_exact_decimals(api: httpx.Client, j: Journal) -> None:
    rid = j.ids["backtest"]
    for suffix in PER_RUN:
        body = get(api, f"/api/runs/{rid}{suffix}")
        assert body.get("run_id", body.get("id")) == rid, suffix
    one = get(api, f"/api/runs/{rid}")
    assert one["report"] == f"/runs/{rid}/report" and one["markets"][0]["symbol"] == "BTCUSDT"
    db = open_database(j.url)
    fills = q.fills(db, rid)
    page = get(api, f"/api/runs/{rid}/fills", limit=5)
    assert page["total"] == len(fills)
    newest = fills[-1]
    f = page["items"][0]
    assert f["exec_id"] == newest["exec_id"] and ISO.match(f["time"])
    # Decimals travel as their exact journaled digits, never as floats.
    assert (f["price"], f["qty"], f["fee"]) == tuple(format(newest[k], "f") for k in ("price", "qty", "fee"))
    trade = get(api, f"/api/runs/{rid}/trades", limit=1)["items"][0]
    assert isinstance(trade["net_pnl"], str) and Decimal(trade["net_pnl"]) == q.trades(db, rid)[-1]["net_pnl"]
    assert ISO.match(trade["entry_time"]) and ISO.match(trade["exit_time"])
    order = get(api, f"/api/runs/{rid}/orders", limit=1)["items"][0]
    assert ISO.match(order["created_time"]) and order["decision_id"].startswith(rid)


def test_decisions_paged_newest_first_with_their_why(api: httpx.Client, j: Journal) -> None:
    rid = j.ids["backtest"]
    every = q.decisions(open_database(j.url), rid)[::-1]  # newest first
    a = get(api, f"/api/runs/{rid}/decisions", limit=10)
    b = get(api, f"/api/runs/{rid}/decisions", limit=10, offset=10)
    assert a["total"] == b["total"] == len(every) > 20
    assert [d["id"] for d in a["items"] + b["items"]] == [d["id"] for d in every[:20]]
    last = get(api, f"/api/runs/{rid}/decisions", limit=10, offset=len(every) - 3)
    assert [d["id"] for d in last["items"]] == [d["id"] for d in every[-3:]]
    for d, row in zip(a["items"], every, strict=False):
        e = row["explanation"]
        # SMA's reasons (bot/report/reasons.py, as `bot journal explain` shows them) on one line.
        assert d["why"].startswith(f"fast SMA {e['fast_sma']:,.2f} ") and f"slow SMA {e['slow_sma']:,.2f}" in d["why"]
        assert d["why"] == " · ".join(d["reasons"]) and "explanation" not in d
        assert ISO.match(d["bar_time"])
    full = get(api, f"/api/runs/{rid}/decisions", limit=1, explanation="true")["items"][0]
    assert full["explanation"] == every[0]["explanation"]


def test_equity_is_downsampled_without_losing_its_extremes(api: httpx.Client, j: Journal) -> None:
    rid = j.ids["backtest"]
    rows = q.equity(open_database(j.url), rid)
    whole = get(api, f"/api/runs/{rid}/equity")
    assert whole["total"] == len(whole["points"]) == len(rows) > 1000
    small = get(api, f"/api/runs/{rid}/equity", points=50)
    pts = small["points"]
    assert small["total"] == len(rows) and 2 < len(pts) <= 50
    assert [p["equity"] for p in (pts[0], pts[-1])] == [rows[0]["equity"], rows[-1]["equity"]]
    eq = [p["equity"] for p in pts]
    assert min(eq) == min(r["equity"] for r in rows) and max(eq) == max(r["equity"] for r in rows)
    times = [p["time"] for p in pts]
    assert times == sorted(times) and all(ISO.match(t) for t in times)
    get(api, f"/api/runs/{rid}/equity", 422, points=5)


@pytest.mark.parametrize("key", ["backtest", "paper"])
def test_positions_from_the_last_mark_and_the_fills(api: httpx.Client, j: Journal, key: str) -> None:
    rid = j.ids[key]
    db = open_database(j.url)
    last = q.equity(db, rid)[-1]
    book = replay_fills(q.fills(db, rid))
    (p,) = get(api, f"/api/runs/{rid}/positions")["items"]
    assert p["symbol"] == "BTCUSDT" and Decimal(p["qty"]) == book.qty
    assert float(p["qty"]) == pytest.approx(last["position"]) and p["mark_price"] == last["price"]
    assert p["side"] == ("long" if book.qty > 0 else "short" if book.qty < 0 else "flat")
    assert Decimal(p["realized_pnl"]) == book.realized and Decimal(p["fees"]) == book.fees
    if book.qty:
        assert Decimal(p["avg_entry_price"]) == book.avg_price
        assert p["unrealized_pnl"] == pytest.approx(float(book.qty) * (last["price"] - float(book.avg_price)))
    assert p["working_orders"] == 0 and ISO.match(p["mark_time"])


def test_a_two_market_run_per_market_and_as_a_portfolio(api: httpx.Client, j: Journal) -> None:
    rid = j.ids["portfolio"]
    db = open_database(j.url)
    one = get(api, f"/api/runs/{rid}")
    assert [(m["symbol"], m["allocation"]) for m in one["markets"]] == [("BTCUSDT", 0.6), ("ETHUSDT", 0.4)]
    items = get(api, f"/api/runs/{rid}/positions")["items"]
    assert [p["symbol"] for p in items] == ["BTCUSDT", "ETHUSDT"]
    for p in items:
        book = replay_fills(q.fills(db, rid, symbol=p["symbol"]))
        assert Decimal(p["qty"]) == book.qty and Decimal(p["realized_pnl"]) == book.realized
        assert p["mark_price"] == q.equity(db, rid, symbol=p["symbol"])[-1]["price"]
    # The portfolio curve: equity and cash of the wallet, no one market's position or price.
    curve = get(api, f"/api/runs/{rid}/equity")
    assert curve["total"] == len(q.equity(db, rid)) and set(curve["points"][0]) == {"time", "equity", "cash", "held"}
    eth = get(api, f"/api/runs/{rid}/equity", symbol="ETHUSDT")
    assert eth["points"][-1]["price"] == q.equity(db, rid, symbol="ETHUSDT")[-1]["price"]
    page = get(api, f"/api/runs/{rid}/decisions", symbol="ethusdt", limit=5)
    assert page["symbol"] == "ETHUSDT" and {d["symbol"] for d in page["items"]} == {"ETHUSDT"}
    assert page["total"] == len(q.decisions(db, rid, symbol="ETHUSDT"))
    summary = get(api, f"/api/runs/{rid}/summary")
    assert [m["symbol"] for m in summary["markets"]] == ["BTCUSDT", "ETHUSDT"]
    assert get(api, f"/api/runs/{rid}/summary", symbol="BTCUSDT")["symbol"] == "BTCUSDT"


def test_summary_is_the_journal_summary(api: httpx.Client, j: Journal) -> None:
    db = open_database(j.url)
    for key in ("backtest", "paper"):
        rid = j.ids[key]
        want = journal_summary(db, q.resolve_run(db, rid))
        got = get(api, f"/api/runs/{rid}/summary")
        assert got["n_trades"] == want["n_trades"] > 0 and got["final_equity"] == pytest.approx(want["final_equity"])
        assert got["sharpe"] == pytest.approx(want["sharpe"]) and got["mode"] == key


def test_kill_switch_is_an_alert_and_an_event(api: httpx.Client, j: Journal) -> None:
    rid = j.ids["kill"]
    alerts = get(api, f"/api/runs/{rid}/alerts")["items"]
    kill = [a for a in alerts if a["kind"] == "kill_switch"]
    assert len(kill) == 1 and kill[0]["severity"] == "bad" and ISO.match(kill[0]["time"])
    assert kill[0]["message"].startswith("kill switch max_drawdown: drawdown ") and "limit 4.0%" in kill[0]["message"]
    events = get(api, f"/api/runs/{rid}/events")
    assert "kill_switch" in [e["kind"] for e in events["items"]]
    only = get(api, f"/api/runs/{rid}/events", kind="kill_switch")
    assert only["total"] == 1 and only["items"][0]["payload"]["reason"] == "max_drawdown"
    assert get(api, f"/api/runs/{j.ids['backtest']}/alerts")["items"] == []


def test_unknown_run_is_404_everywhere_and_unknown_market_400(api: httpx.Client, j: Journal) -> None:
    for suffix in PER_RUN:
        body = get(api, f"/api/runs/nosuchrun{suffix}", 404)
        assert body["detail"] == "no run 'nosuchrun' in the journal"
    assert api.get("/runs/nosuchrun/report").status_code == 404
    body = get(api, f"/api/runs/{j.ids['backtest']}/trades", 400, symbol="ETHUSDT")
    assert "did not trade ETHUSDT" in body["detail"]
    get(api, f"/api/runs/{j.ids['backtest']}/decisions", 422, limit=0)


def test_read_only(api: httpx.Client, j: Journal) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE", "HEAD"):
        for path in (f"/api/runs/{j.ids['backtest']}", "/", "/healthz"):
            r = api.request(method, path)
            assert r.status_code == 405 and r.headers["allow"] == "GET", (method, path)


def test_report_page_is_the_journal_report(api: httpx.Client, j: Journal, tmp_path: Path) -> None:
    rid = j.ids["paper"]
    r = api.get(f"/runs/{rid}/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    written = write_report(open_database(j.url), rid, tmp_path, png=False).html.read_text()
    footer = re.compile(r"Generated \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    assert footer.sub("", r.text) == footer.sub("", written)
    assert api.get("/runs/latest/report", params={"theme": "dark"}).status_code == 200
    assert api.get(f"/runs/{rid}/report", params={"theme": "pink"}).status_code == 422


def test_the_journaled_password_is_masked_in_every_answer(api: httpx.Client, j: Journal) -> None:
    rid = j.ids["backtest"]
    stored = q.resolve_run(open_database(j.url), rid)["config"]["storage"]["url"]
    assert PASSWORD in stored  # the journal holds it: the API must not hand it out
    one = get(api, f"/api/runs/{rid}")
    assert one["config"]["storage"]["url"] == "postgresql+psycopg://trader:***@db.internal:5432/journal"
    texts = [api.get(f"/api/runs/{rid}{s}", params={"explanation": "true"}).text for s in PER_RUN]
    texts += [api.get("/api/runs").text, api.get(f"/runs/{rid}/report").text, api.get("/api/openapi.json").text]
    assert all(PASSWORD not in t for t in texts)
    assert "trader:***@db.internal" in texts[-2]  # the report's config section, masked


def test_token_rules(guarded: httpx.Client, j: Journal) -> None:
    rid = j.ids["backtest"]
    assert guarded.get("/healthz").json() == {"status": "ok"}
    for path in ("/api/runs", f"/api/runs/{rid}/equity", "/", "/static/dashboard.js", f"/runs/{rid}/report"):
        r = guarded.get(path)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
    assert guarded.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}x"}).status_code == 401
    assert guarded.get("/api/runs", params={"token": TOKEN[:-1]}).status_code == 401
    assert guarded.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).json()["total"] == 4
    assert guarded.get("/api/runs", params={"token": TOKEN}).status_code == 200
    page = guarded.get("/", params={"token": TOKEN})
    assert page.status_code == 200 and 'id="equity-chart"' in page.text
    js = guarded.get("/static/plotly.min.js", params={"token": TOKEN})
    assert js.status_code == 200 and len(js.content) > 1_000_000
    assert js.headers["content-type"].startswith("text/javascript")


def test_dashboard_page_and_static_files(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200 and "dashboard.js" in page.text and "cdn" not in page.text.lower()
    assert page.headers["referrer-policy"] == "no-referrer"
    for name in ("dashboard.js", "dashboard.css"):
        assert api.get(f"/static/{name}").status_code == 200
    assert api.get("/static/nothing.js").status_code == 404
    assert api.get("/static/..%2Fapp.py").status_code == 404


# -- the command ---------------------------------------------------------------------------------
def bot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "BOT_API_TOKEN"}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=120, check=False)


@pytest.mark.parametrize(("args", "env", "says"), [
    (["--host", "0.0.0.0"], {}, "set BOT_API_TOKEN"),
    (["--host", "192.168.1.10"], {}, "set BOT_API_TOKEN"),
    (["--host", "0.0.0.0"], {"BOT_API_TOKEN": "short"}, "token is too short"),
    (["--token", "has a space in it, long enough"], {}, "printable ASCII"),
    (["--port", "70000"], {}, "bad --port 70000"),
])
def test_cli_refuses_bad_input_in_one_line(tmp_path: Path, args: list[str], env: dict[str, str], says: str) -> None:
    r = bot("serve", "--db", f"sqlite:///{tmp_path / 'j.db'}", *args, env=env)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serves_beyond_loopback_with_a_token_and_logs_no_token(j: Journal) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--db", j.url, "--host", "0.0.0.0",
                             "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "BOT_API_TOKEN": TOKEN})
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "bot serve did not come up"
            time.sleep(0.2)
        assert httpx.get(f"{base}/api/runs", timeout=30).status_code == 401
        assert httpx.get(f"{base}/api/runs", params={"token": TOKEN}, timeout=30).json()["total"] == 4
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert "token required" in out and "GET /api/runs?token=*** HTTP/1.1" in out, out
    assert TOKEN not in out and PASSWORD not in out
