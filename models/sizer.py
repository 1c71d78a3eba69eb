"""Stage 2 of ``gru_sizer``: a GRU position sizer over 11 exposure levels (0..10 tenths).

The sizer is run recurrently: at each step it reads the (frozen) stage-1 feature vector and its
own previous position, updates its hidden state and picks a level. While training the level is
drawn with Gumbel-softmax (temperature annealed; optional straight-through hard samples) and
the *expected* position of that sample is fed to the next step, so the loss at step s reaches
the decisions of steps < s through the positions as well as through the hidden state. When
trading the level is the argmax and the fed-back position is that level / 10.

Loss per sequence (returns in percent so the terms are O(1)):

    - mean(strategy return - benchmark return)    benchmark exposure chosen by the regime
    + w_risk * risk cost                            downside deviation or max drawdown
    + w_opp  * opportunity cost                     upside missed while the regime is bull
    + w_turn * turnover cost                        fee x |change of position|, on top of
                                                    the fee already taken from the return

Subtracting a benchmark that does not depend on the positions only moves the zero point of the
return term (its gradient equals that of the raw return); the regime's real effect on the
gradient is through the opportunity cost. Reported this way in the model card.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bot.errors import ModelError
from models.regime import BENCHMARK_EXPOSURE, BULL

N_LEVELS = 11


@dataclass(frozen=True)
class SizerConfig:
    """Hyper-parameters of the sizer network and of its loss."""

    feature_dim: int
    hidden: int = 32
    steps: int = 20                 # T: consecutive steps per training sequence / state horizon
    tau_start: float = 2.0          # Gumbel-softmax temperature, annealed geometrically
    tau_end: float = 0.3
    hard: bool = True               # straight-through hard samples while training
    risk: str = "downside"          # "downside" (deviation) or "drawdown"
    w_risk: float = 0.1
    w_opp: float = 0.5
    w_turn: float = 5.0             # extra turnover penalty on top of the fees in the return
    fee: float = 0.001              # per side, used by the turnover cost

    def __post_init__(self) -> None:
        if self.risk not in ("downside", "drawdown"):
            raise ModelError(f"unknown sizer risk cost {self.risk!r}: expected downside or drawdown")
        if self.steps < 1 or self.hidden < 1 or self.feature_dim < 1:
            raise ModelError("sizer steps, hidden and feature_dim must be positive")
        if not (self.tau_start > 0 and self.tau_end > 0):
            raise ModelError("Gumbel temperatures must be positive")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SizerConfig:
        try:
            return cls(**d)
        except TypeError as exc:
            raise ModelError(f"sizer hyper-parameters are malformed: {exc}") from None


def temperature(cfg: SizerConfig, progress: float) -> float:
    """Annealed temperature at training progress in [0, 1] (geometric from start to end)."""
    p = min(max(progress, 0.0), 1.0)
    return cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** p


class PositionSizer(nn.Module):
    """GRU cell + level head. One :meth:`step` per bar; :meth:`forward` runs T steps."""

    def __init__(self, cfg: SizerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.cell = nn.GRUCell(cfg.feature_dim + 1, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, N_LEVELS)
        self.register_buffer("levels", torch.arange(N_LEVELS, dtype=torch.float32) / (N_LEVELS - 1),
                             persistent=False)

    def init_state(self, batch: int, dtype: torch.dtype = torch.float32,
                   prev: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Zero hidden state and the position held before the first step (``prev`` [B], default
        flat): how every sequence starts."""
        dev = self.head.weight.device
        h = torch.zeros(batch, self.cfg.hidden, dtype=dtype, device=dev)
        return h, (torch.zeros(batch, dtype=dtype, device=dev) if prev is None else prev.to(dtype))

    def step(self, x: Tensor, h: Tensor, prev_pos: Tensor, tau: float | None = None,
             hard: bool | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One bar: (new hidden, logits [B, 11], level weights [B, 11], position [B] in [0, 1]).

        ``tau`` given: a Gumbel-softmax sample (differentiable; straight-through when ``hard``).
        ``tau`` None: the argmax level as a one-hot (trading).
        """
        h = self.cell(torch.cat([x, prev_pos.unsqueeze(-1)], dim=-1), h)
        logits = self.head(h)
        if tau is not None:
            w = F.gumbel_softmax(logits, tau=tau, hard=self.cfg.hard if hard is None else hard)
        else:
            w = F.one_hot(logits.argmax(-1), N_LEVELS).to(logits.dtype)
        pos = (w * self.levels.to(w.dtype)).sum(-1)
        return h, logits, w, pos

    def forward(self, x: Tensor, tau: float | None = None, hard: bool | None = None,
                prev: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [B, T, F] -> (positions [B, T], logits [B, T, 11]); starts from :meth:`init_state`
        with the position ``prev`` [B] held before the sequence (default flat)."""
        h, pos = self.init_state(x.shape[0], x.dtype, prev)
        positions, logits = [], []
        for s in range(x.shape[1]):
            h, lg, _w, pos = self.step(x[:, s], h, pos, tau, hard)
            positions.append(pos)
            logits.append(lg)
        return torch.stack(positions, 1), torch.stack(logits, 1)


def sizer_loss(pos: Tensor, next_ret: Tensor, regime: Tensor, cfg: SizerConfig,
               prev: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Loss of positions [B, T] held over next-bar returns [B, T] under regime codes [B, T].

    Position s is decided at the close of bar s and earns the return to the close of bar s+1.
    Every step pays turnover, the first one from ``prev`` [B], the position held before the
    sequence (default flat): a state restart is no free trade.
    """
    r = next_ret * 100.0
    before = torch.zeros_like(pos[:, :1]) if prev is None else prev.to(pos.dtype).reshape(-1, 1)
    turn = (pos - torch.cat([before, pos[:, :-1]], dim=1)).abs()
    strat = pos * r - cfg.fee * 100.0 * turn
    bench_pos = torch.tensor(BENCHMARK_EXPOSURE, dtype=pos.dtype, device=pos.device)[regime]
    rel = (strat - bench_pos * r).mean()
    if cfg.risk == "downside":
        risk = torch.sqrt(strat.clamp(max=0.0).pow(2).mean(1) + 1e-8).mean()
    else:
        wealth = strat.cumsum(1)
        peak = torch.cummax(torch.cat([torch.zeros_like(wealth[:, :1]), wealth], 1), 1).values[:, 1:]
        risk = (peak - wealth).amax(1).mean()
    bull = (regime == BULL).to(pos.dtype)
    opp = (r.clamp(min=0.0) * (1.0 - pos) * bull).mean()
    turnover = turn.mean() if turn.numel() else pos.new_zeros(())
    loss = -rel + cfg.w_risk * risk + cfg.w_opp * opp + cfg.w_turn * cfg.fee * 100.0 * turnover
    parts = {"rel_return": float(rel.detach()), "risk": float(risk.detach()), "opportunity": float(opp.detach()),
             "turnover": float(turnover.detach())}
    if not math.isfinite(float(loss.detach())):
        raise ModelError("sizer loss is not finite (check the input features)")
    return loss, parts


def is_reset_bar(open_time_ms: int, bar_ms: int, steps: int) -> bool:
    """True where the trading state restarts: every ``steps`` bars, aligned to the clock.

    The state at any bar therefore depends on at most the last ``steps`` bars, which is what a
    training sequence sees and what lets a restarted bot rebuild it exactly by replaying them.
    """
    return (int(open_time_ms) // int(bar_ms)) % int(steps) == 0


#: What happens to the trading state before a step (:func:`restarts`).
KEEP, RESTART, FLAT = 0, 1, 2


def restarts(open_times: np.ndarray, bar_ms: int, steps: int, usable: np.ndarray) -> np.ndarray:
    """Per bar of a run of bars: KEEP the state, RESTART it (hidden state zeroed, the held
    position carries) on a clock-aligned bar (:func:`is_reset_bar`), or start FLAT (zero state,
    no position) on the first usable bar and the first usable bar after unusable ones: a window
    that spanned a gap took no step and the strategy was flat through it."""
    u = np.asarray(usable, dtype=bool)
    before = np.concatenate(([False], u[:-1]))
    clock = (np.asarray(open_times, dtype=np.int64) // int(bar_ms)) % int(steps) == 0
    out = np.full(u.shape[0], KEEP, dtype=np.int8)
    out[u & clock] = RESTART
    out[u & ~before] = FLAT
    return out


class SizerRunner:
    """The trading-time recurrence: one argmax step per bar, persistent hidden state.

    Used by the strategy bar by bar *and* by the batched backtest path, so both make the same
    decisions. Runs :meth:`PositionSizer.step` (GRU cell, head, argmax level, no sampling) in
    NumPy, in the sizer's dtype (float64 in the strategy): the same arithmetic as the torch cell
    to rounding (``tests/test_gru_model.py``) at a fraction of a torch call's overhead for one bar.
    It starts flat; a :meth:`reset` restarts the hidden state but keeps the position held, which
    the next step reads and trades from (as in training, where every sequence starts from a held
    position). ``h`` [1, H] and ``prev`` [1] are the state, as tensors, for the attribution.
    """

    def __init__(self, sizer: PositionSizer) -> None:
        self.sizer = sizer.eval()
        self.dtype = sizer.head.weight.dtype
        dt = np.float64 if self.dtype == torch.float64 else np.float32
        arr = lambda t: t.detach().cpu().numpy().astype(dt)  # noqa: E731
        cell = sizer.cell
        self._wi, self._bi = arr(cell.weight_ih).T.copy(), arr(cell.bias_ih)
        self._wh, self._bh = arr(cell.weight_hh).T.copy(), arr(cell.bias_hh)
        self._wo, self._bo = arr(sizer.head.weight).T.copy(), arr(sizer.head.bias)
        self._levels = arr(sizer.levels)  # float32 tenths, as the torch step reads them
        self._n = sizer.cfg.hidden
        self._dt = dt
        self.steps = 0
        self.flat()

    @property
    def h(self) -> Tensor:
        return torch.from_numpy(self._h)

    @property
    def prev(self) -> Tensor:
        return torch.from_numpy(self._prev)

    def reset(self) -> None:
        self._h = np.zeros((1, self._n), dtype=self._dt)
        self.steps = 0

    def flat(self) -> None:
        """The position is flat (a gap: the strategy traded to level 0); the state restarts."""
        self._prev = np.zeros(1, dtype=self._dt)
        self.reset()

    def before_step(self, code: int) -> None:
        """Apply a :func:`restarts` code."""
        if code == FLAT:
            self.flat()
        elif code == RESTART:
            self.reset()

    def step(self, feature: Tensor | np.ndarray) -> tuple[int, np.ndarray]:
        """Feature vector [1, d] -> (level 0..10, probabilities [11])."""
        x = feature.detach().numpy() if isinstance(feature, Tensor) else feature
        xi = np.concatenate([np.asarray(x, dtype=self._dt).reshape(1, -1), self._prev[:, None]], axis=1)
        n = self._n
        gi = xi @ self._wi + self._bi
        gh = self._h @ self._wh + self._bh
        r = 1.0 / (1.0 + np.exp(-(gi[:, :n] + gh[:, :n])))
        z = 1.0 / (1.0 + np.exp(-(gi[:, n:2 * n] + gh[:, n:2 * n])))
        c = np.tanh(gi[:, 2 * n:] + r * gh[:, 2 * n:])
        self._h = (1.0 - z) * c + z * self._h
        logits = (self._h @ self._wo + self._bo)[0]
        level = int(logits.argmax())
        self._prev = self._levels[level:level + 1].copy()
        self.steps += 1
        e = np.exp(logits - logits[level])
        return level, e / e.sum()
