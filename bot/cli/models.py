"""``bot train`` and ``bot evaluate``: train a strategy's model, score any checkpoint on any data.

Each strategy's spec names its tools ("module:function" strings, imported lazily so torch loads
only when needed):

- ``spec.trainer``: ``train(req: models.training.TrainRequest) -> Path``
- ``spec.evaluator``: ``evaluate(req: models.training.EvalRequest) -> dict`` for checkpoints whose
  kind (ModelMeta.kind) is the strategy's name
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from bot import app as core
from bot.cli.common import (
    AllowInSampleOpt,
    AllowOtherMarketOpt,
    ConfigOpt,
    SetOpt,
    console,
    dumps,
    err_console,
    load,
    warn,
    warn_gaps,
    with_allowances,
)
from bot.cli.data_args import split_item, train_assets
from bot.errors import ConfigError, ModelError
from strategies import find_spec, get_spec, names
from strategies.files import is_file_ref


def _with(field: str) -> list[str]:
    """Registered strategies whose spec sets ``field`` (for the one-line errors)."""
    return [n for n in names() if (s := find_spec(n)) is not None and getattr(s, field) is not None]


def default_checkpoint(strategy: str, symbol: str, timeframe: str) -> Path:
    """checkpoints/<strategy>_<symbol>_<timeframe>.pt relative to the working directory."""
    return Path("checkpoints") / f"{strategy}_{symbol}_{timeframe}.pt"


def train_command(cfg: Any, data_path: str | list[str] | None, out: str | None, *, progress: bool = True) -> Path:
    """Load data (one file, or several assets: ``bot.cli.data_args``), run the registered trainer,
    return the checkpoint path."""
    from models.training import TrainRequest

    name = cfg.strategy.name
    spec = get_spec(name)
    if spec.trainer is None:
        raise ConfigError(f"strategy {name!r} has no model to train; trainable: {', '.join(_with('trainer'))}")
    items = [data_path] if isinstance(data_path, str) else list(data_path or [])
    if not items:
        from bot.data_download import cached_market_file  # noqa: PLC0415 - download on demand

        items = [cached_market_file(cfg)]
    assets = train_assets(items, cfg.market.symbol)
    if len(assets) > 1 and not spec.multi_asset:
        multi = ", ".join(n for n in names() if (s := find_spec(n)) is not None and s.multi_asset)
        raise ConfigError(f"strategy {name!r} trains on one market: pass one --data (several: {multi})")
    loaded = []
    for symbol, path_ in assets:
        data = core.load_data(cfg, path_, market=cfg.market.model_copy(update={"symbol": symbol}))
        warn_gaps(symbol, data)  # the trainer leaves out every sample that spans one
        loaded.append((symbol, data))
    symbol, data = loaded[0]
    # A file strategy's name is its path: its checkpoint is named after the class instead.
    stem = getattr(spec.cls, "name", spec.cls.__name__) if is_file_ref(spec.name) else spec.name
    path = Path(out) if out else default_checkpoint(stem, "+".join(s for s, _ in loaded), cfg.market.timeframe)
    req = TrainRequest(data=data, params=dict(cfg.strategy.params), symbol=symbol,
                       timeframe=cfg.market.timeframe, fee_rate=cfg.broker.fee_rate,
                       long_only=cfg.market.category == "spot", out=path, progress=progress,
                       console=err_console, more=tuple(loaded[1:]))
    return spec.resolve("trainer")(req)


def evaluate_command(cfg: Any, checkpoint: str, data_path: str) -> dict[str, Any]:
    """Score ``checkpoint`` on ``data_path`` (``FILE`` of the config's symbol, or ``SYMBOL=FILE``) with
    the evaluator registered for its kind, after the other-market guard; the evaluator skips (or,
    allowed, labels) the bars it was fitted on (a multi-asset checkpoint: that symbol's)."""
    from models.checkpoint import read_meta
    from models.provenance import check_market, fitted_of
    from models.training import EvalRequest

    symbol, data_path = split_item(data_path)
    if symbol:
        cfg = cfg.with_market(cfg.market.model_copy(update={"symbol": symbol}))
    meta = read_meta(checkpoint)
    # A kind read from a file names a registered strategy, never a file to import.
    spec = None if is_file_ref(meta.kind) else find_spec(meta.kind)
    if spec is None or spec.evaluator is None:
        raise ModelError(f"no evaluator for model kind {meta.kind!r}; known: {', '.join(_with('evaluator'))}")
    m = cfg.market
    other = check_market(fitted_of(meta), m.symbol, m.timeframe, allow=m.strategy.allow_other_market,
                         model=f"model {meta.model_id}")
    data = core.load_data(cfg, data_path)
    warn_gaps(m.symbol, data)  # as `bot backtest` tells them
    req = EvalRequest(checkpoint=Path(checkpoint), data=data, symbol=m.symbol, timeframe=m.timeframe,
                      fee_rate=cfg.broker.fee_rate, long_only=m.category == "spot",
                      allow_in_sample=m.strategy.allow_in_sample)
    result = spec.resolve("evaluator")(req)
    if other:
        result["notes"] = [other, *result.get("notes", [])]
    result["gaps"] = data.gaps.payload()
    result["drift"] = feature_drift(meta, data)
    if result["drift"] is not None:
        warn(m.symbol, result["drift"]["text"])
    return result


def feature_drift(meta: Any, data: Any) -> dict[str, Any] | None:
    """The drift warning a run of this checkpoint on ``data`` would journal (models/drift.py)."""
    from models.drift import scan
    from models.features import FEATURE_NAMES, Normalizer, compute_features

    if list(meta.feature_names) != list(FEATURE_NAMES) or not meta.normalizer:
        return None  # a plugin's own features: not the shared pipeline's statistics
    hit = scan(Normalizer.from_dict(meta.normalizer), compute_features(data))
    return None if hit is None else {"bar": int(data.time[hit[0]]), **hit[1]}


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        strategy: str | None = typer.Option(None, "--strategy", "-s",
                                            help="Model strategy: dsc, rollout, gru_sizer, or a plugin with a trainer"),
        data: list[str] | None = typer.Option(None, "--data", "-d", help="Candle file (CSV, CSV.gz, Parquet); "
                                              "repeat to train on several assets (dsc, rollout), each FILE "
                                              "(symbol from its name) or SYMBOL=FILE."),
        out: str | None = typer.Option(None, "--out", "-o",
                                       help="Checkpoint path (default checkpoints/<strategy>_<symbol>_<tf>.pt)."),
        as_json: bool = typer.Option(False, "--json", help="Print the model card as JSON (no progress bar)."),
        stage: int | None = typer.Option(None, "--stage", min=1, max=2,
                                         help="gru_sizer: 1 = encoder only, "
                                              "2 = retrain the sizer on the checkpoint's encoder."),
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
    ) -> None:
        """Train a strategy's model on a candle file; writes the checkpoint and its model card."""
        from models.card import render_card
        from models.checkpoint import card_path, read_meta

        extra: dict[str, Any] = {"strategy.name": strategy} if strategy else {}
        if stage is not None:
            extra["strategy.params.stage"] = stage
        cfg = load(config, set_, extra)
        path = train_command(cfg, data, out, progress=not as_json)
        meta = read_meta(path)
        if as_json:
            sys.stdout.write(dumps({"checkpoint": str(path), "model_id": meta.model_id, **meta.to_dict()}) + "\n")
            return
        console.print(render_card(meta))
        console.print(f"checkpoint: {path}\nmodel card: {card_path(path)}")

    @app.command("evaluate")
    def evaluate(
        checkpoint: str = typer.Option(..., "--checkpoint", help="A checkpoint written by `bot train`."),
        data: str = typer.Option(..., "--data", "-d", help="Candle file to score the model on (FILE of "
                                 "market.symbol, or SYMBOL=FILE)."),
        as_json: bool = typer.Option(False, "--json", help="Print the metrics as one JSON object."),
        allow_in_sample: bool = AllowInSampleOpt,
        allow_other_market: bool = AllowOtherMarketOpt,
        config: Path | None = ConfigOpt,
        set_: list[str] | None = SetOpt,
    ) -> None:
        """The model card's classification metrics and baselines on any candle file (the bars the
        checkpoint was fitted on are skipped unless --allow-in-sample)."""
        from models.card import metrics_table, verdict_lines

        cfg = with_allowances(load(config, set_), allow_in_sample, allow_other_market)
        result = evaluate_command(cfg, checkpoint, data)
        if as_json:
            sys.stdout.write(dumps(result) + "\n")
            return
        title = f"evaluate {result.get('model_id', '')} on {Path(data).name} ({result.get('sample', 'unchecked')})"
        table = metrics_table(result.get("metrics", {}), title=title)
        if table is not None:
            console.print(table)
        for line in verdict_lines(result.get("metrics", {})):
            console.print(line, markup=False)
        if result.get("deletion"):
            from models.card import deletion_table

            console.print(deletion_table(result["deletion"], "deletion test of every attribution method "
                                         "(drops of p(up) - p(down); newest bar excluded from top-k and random-k)"))
        for line in result.get("notes", []):
            console.print(line, highlight=False)
        if result.get("in_sample"):
            console.print("[bold yellow]in-sample:[/bold yellow] these figures include bars the model was "
                          "fitted on; they are not out of sample")
