"""Checkpoints: weights + metadata in one file, loaded with ``torch.load(weights_only=True)``.

A checkpoint holds one or several named modules (``{"model": ...}`` for a classifier,
``{"stage1": ..., "stage2": ...}`` for a two-stage model) and a :class:`ModelMeta` stored as a
JSON string, so nothing but tensors and plain containers is ever unpickled. Beside every
checkpoint ``X.pt`` lies its model card ``X.card.json`` (see :mod:`models.card`).

Every problem a user can cause (missing file, corrupted file, another model kind, other features
or window) raises :class:`ModelError` with one clear line.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bot.errors import ModelError

FORMAT = "bot-checkpoint"
VERSION = 1


@dataclass(slots=True)
class ModelMeta:
    """Everything needed to rebuild, check and describe a trained model."""

    kind: str                                   # "dsc", "rollout", "gru_sizer", ...
    hparams: dict[str, Any]                     # model hyper-parameters (enough to rebuild it)
    feature_names: list[str]
    window: int
    horizon: int
    normalizer: dict[str, Any]                  # Normalizer.to_dict()
    #: The training file: source, start/end ms, bars, test part (gru_sizer: every part's bars).
    train_range: dict[str, Any] = field(default_factory=dict)
    #: Hash of exactly the fitted bars (models.provenance.data_hash).
    data_hash: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)      # model card numbers
    train_config: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)       # threshold, fee, class balance...
    extra: dict[str, Any] = field(default_factory=dict)        # anything kind-specific
    modules: list[str] = field(default_factory=list)           # names of the saved modules
    created: str = ""
    version: int = VERSION
    #: What the model was fitted on: symbol, timeframe, start/end open times (ms, inclusive), bars
    #: (models.provenance; empty in checkpoints written before it, read from train_range there).
    fitted: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        try:
            names = {f for f in cls.__dataclass_fields__}  # noqa: C416
            return cls(**{k: v for k, v in d.items() if k in names})
        except TypeError as exc:
            raise ModelError(f"checkpoint metadata is incomplete: {exc}") from None

    @property
    def model_id(self) -> str:
        """Short, stable id: kind + hash of the metadata that defines the model."""
        key = json.dumps([self.kind, self.hparams, self.data_hash, self.created, self.window], sort_keys=True)
        return f"{self.kind}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


@dataclass(slots=True)
class Checkpoint:
    """A loaded checkpoint: metadata plus the state dict of each named module."""

    path: Path
    meta: ModelMeta
    states: dict[str, dict[str, torch.Tensor]]

    def load_into(self, name: str, module: nn.Module) -> nn.Module:
        """Load module ``name``'s weights (strict) and switch it to eval mode."""
        if name not in self.states:
            raise ModelError(f"checkpoint {self.path} has no module {name!r} (has: {', '.join(self.states)})")
        try:
            module.load_state_dict(self.states[name], strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ModelError(f"checkpoint {self.path} does not fit the {self.meta.kind} model: {first}") from None
        return module.eval()


def default_checkpoint_path(strategy: str, symbol: str, timeframe: str) -> Path:
    """checkpoints/<strategy>_<symbol>_<timeframe>.pt relative to the working directory."""
    return Path("checkpoints") / f"{strategy}_{symbol}_{timeframe}.pt"


def card_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.stem + ".card.json")


def onnx_path(path: str | Path, module: str = "model") -> Path:
    """Where the ONNX export of a checkpoint's module lives (beside the checkpoint)."""
    p = Path(path)
    return p.with_name(f"{p.stem}.{module}.onnx")


def save_checkpoint(path: str | Path, modules: nn.Module | dict[str, nn.Module], meta: ModelMeta) -> Path:
    """Write the checkpoint atomically and its model card beside it; returns the path."""
    p = Path(path)
    mods = {"model": modules} if isinstance(modules, nn.Module) else dict(modules)
    meta.modules = list(mods)
    if not meta.created:
        meta.created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "meta_json": json.dumps(meta.to_dict(), sort_keys=True, allow_nan=False),
        "states": {k: {n: t.detach().cpu().clone() for n, t in m.state_dict().items()} for k, m in mods.items()},
    }
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        torch.save(payload, tmp)
        os.replace(tmp, p)
    except OSError as exc:
        raise ModelError(f"cannot write checkpoint {p}: {exc.strerror or exc}") from None
    write_card(p, meta)
    return p


def write_card(path: str | Path, meta: ModelMeta) -> Path:
    """(Re)write the JSON model card beside checkpoint ``path``."""
    cp = card_path(path)
    card = {"checkpoint": Path(path).name, "model_id": meta.model_id, **meta.to_dict()}
    try:
        cp.write_text(json.dumps(card, indent=2, sort_keys=False, allow_nan=False) + "\n")
    except OSError as exc:
        raise ModelError(f"cannot write model card {cp}: {exc.strerror or exc}") from None
    return cp


def read_meta(path: str | Path) -> ModelMeta:
    """Metadata only (loads the file the same safe way)."""
    return load_checkpoint(path).meta


def load_checkpoint(path: str | Path, *, kind: str | None = None,
                    feature_names: list[str] | tuple[str, ...] | None = None,
                    window: int | None = None, horizon: int | None = None) -> Checkpoint:
    """Load safely and check what the caller expects; any mismatch is one ModelError line."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"checkpoint not found: {p} (train one with `bot train`)")
    if p.is_dir():
        raise ModelError(f"checkpoint path is a directory, expected a file: {p}")
    try:
        raw = torch.load(p, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError,
            OSError, AttributeError, KeyError, IndexError, TypeError) as exc:
        raise ModelError(f"checkpoint {p} is corrupted or not a bot checkpoint "
                         f"({type(exc).__name__} while reading it)") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ModelError(f"{p} is not a bot checkpoint (no '{FORMAT}' header)")
    if raw.get("version") != VERSION:
        raise ModelError(f"checkpoint {p} has format version {raw.get('version')}; this build reads {VERSION}")
    try:
        meta = ModelMeta.from_dict(json.loads(raw["meta_json"]))
        states = raw["states"]
        if not isinstance(states, dict):
            raise TypeError("states")
    except (KeyError, TypeError, json.JSONDecodeError):
        raise ModelError(f"checkpoint {p} has malformed metadata") from None
    if kind is not None and meta.kind != kind:
        raise ModelError(f"checkpoint {p} holds a {meta.kind!r} model, not {kind!r}")
    if feature_names is not None and list(meta.feature_names) != list(feature_names):
        have, want = list(meta.feature_names), list(feature_names)
        diff = next((i for i, (a, b) in enumerate(zip(have, want, strict=False)) if a != b), min(len(have), len(want)))
        got = have[diff] if diff < len(have) else "<none>"
        exp = want[diff] if diff < len(want) else "<none>"
        raise ModelError(f"checkpoint {p} was trained on other features ({len(have)} vs {len(want)}; "
                         f"#{diff} is {got!r}, expected {exp!r}); retrain it")
    if window is not None and meta.window != window:
        raise ModelError(f"checkpoint {p} uses a window of {meta.window} bars, the strategy expects {window}")
    if horizon is not None and meta.horizon != horizon:
        raise ModelError(f"checkpoint {p} predicts {meta.horizon} bars ahead, the strategy expects {horizon}")
    return Checkpoint(p, meta, states)
