"""gru_sizer models: encoder pieces, regime votes, sizer loss, and the two gradient proofs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bot.errors import ModelError
from models.price_encoder import (
    EncoderConfig,
    LatentAttention,
    PriceEncoder,
    apply_rotary,
    price_loss_fn,
    rotary_table,
)
from models.regime import BEAR, BULL, SIDEWAYS, classify
from models.sizer import (
    FLAT,
    KEEP,
    N_LEVELS,
    RESTART,
    PositionSizer,
    SizerConfig,
    SizerRunner,
    is_reset_bar,
    restarts,
    sizer_loss,
    temperature,
)
from models.training import state_fingerprint

torch.set_num_threads(1)
TINY = EncoderConfig(n_features=5, window=12, d_model=16, n_layers=1, n_heads=2, kv_lora_rank=4,
                     qk_nope_dim=4, qk_rope_dim=4, v_head_dim=4, ffn_hidden=16, feature_dim=6, horizon=3,
                     dropout=0.0)


def test_rotary_scores_depend_only_on_relative_position() -> None:
    fc = rotary_table(4, 10)
    assert fc.dtype == torch.float32 and fc.shape == (10, 2, 2)
    ref = torch.polar(torch.ones(10, 2), torch.outer(torch.arange(10.0), 1 / 10_000 ** (torch.arange(0, 4, 2) / 4)))
    q0 = torch.randn(1, 10, 1, 4)
    want = torch.view_as_real(torch.view_as_complex(q0.reshape(1, 10, 1, 2, 2)) * ref.view(1, 10, 1, 2)).flatten(3)
    assert torch.allclose(apply_rotary(q0, fc), want, atol=1e-6)  # the complex rotation, in real arithmetic
    q = torch.randn(1, 1, 1, 4).expand(1, 10, 1, 4)
    k = torch.randn(1, 1, 1, 4).expand(1, 10, 1, 4)
    qr, kr = apply_rotary(q, fc), apply_rotary(k, fc)
    assert torch.allclose(qr.norm(dim=-1), q.norm(dim=-1), atol=1e-5)  # a rotation keeps length
    s = lambda i, j: float((qr[0, i, 0] * kr[0, j, 0]).sum())  # noqa: E731
    assert s(3, 1) == pytest.approx(s(7, 5), abs=1e-5)  # same offset, same score
    assert s(3, 1) != pytest.approx(s(3, 2), abs=1e-3)


def test_latent_attention_squeezes_kv_through_the_low_rank_latent() -> None:
    att = LatentAttention(TINY)
    assert att.wkv_a.out_features == TINY.kv_lora_rank + TINY.qk_rope_dim
    assert att.wkv_b.in_features == TINY.kv_lora_rank
    assert att.wkv_b.out_features == TINY.n_heads * (TINY.qk_nope_dim + TINY.v_head_dim)
    out = att(torch.randn(3, 12, 16), rotary_table(4, 12))
    assert out.shape == (3, 12, 16)


def test_encoder_heads_and_shape_check() -> None:
    enc = PriceEncoder(TINY)
    feat, path = enc(torch.randn(4, 12, 5))
    assert feat.shape == (4, 6) and path.shape == (4, 3)
    assert float(feat.detach().abs().max()) <= 1.0  # tanh feature head
    with pytest.raises(ModelError, match="expects"):
        enc(torch.randn(4, 11, 5))


def test_price_loss_is_selectable() -> None:
    p, y = torch.tensor([[0.0, 3.0]]), torch.tensor([[1.0, 0.0]])
    assert float(price_loss_fn("mse")(p, y)) == pytest.approx(5.0)
    assert float(price_loss_fn("mae")(p, y)) == pytest.approx(2.0)
    assert float(price_loss_fn("huber")(p, y)) == pytest.approx(float(F.huber_loss(p, y)))
    with pytest.raises(ModelError, match="unknown price loss"):
        price_loss_fn("l3")


def test_regime_vote() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.01, 64)
    assert classify(noise + 0.01) == BULL
    assert classify(noise - 0.01) == BEAR
    assert classify(np.tile([0.01, -0.01], 32)) == SIDEWAYS
    assert classify(np.zeros(64)) == SIDEWAYS  # no movement, no vote


def test_stage1_receives_no_gradient_in_stage2() -> None:
    """Frozen encoder in the graph: the sizer's loss reaches the sizer only."""
    torch.manual_seed(0)
    enc = PriceEncoder(TINY)
    enc.eval().requires_grad_(False)
    before = state_fingerprint(enc)
    sizer = PositionSizer(SizerConfig(feature_dim=6, hidden=8, steps=5))
    opt = torch.optim.SGD(sizer.parameters(), lr=0.1)
    windows = torch.randn(4, 5, 12, 5)  # [B, T, W, F]
    feats = enc.encode(windows.flatten(0, 1)).view(4, 5, 6)
    pos, _ = sizer(feats, tau=1.0)
    loss, _ = sizer_loss(pos, torch.randn(4, 5) * 0.01, torch.full((4, 5), BULL), sizer.cfg)
    loss.backward()
    opt.step()
    assert all(p.grad is None for p in enc.parameters())
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in sizer.parameters())
    assert state_fingerprint(enc) == before


def test_gradients_reach_the_first_gru_step_through_the_gumbel_path() -> None:
    """Cut the hidden-state path between steps: the gradient of the last position with respect
    to the first step's input still arrives, carried only by the fed-back expected position."""
    torch.manual_seed(1)
    sizer = PositionSizer(SizerConfig(feature_dim=3, hidden=8, steps=6))
    x = torch.randn(2, 6, 3, requires_grad=True)

    def last_position(cut_positions: bool) -> torch.Tensor:
        torch.manual_seed(2)  # same Gumbel noise in both runs
        h, pos = sizer.init_state(2)
        for s in range(6):
            h, _lg, _w, pos = sizer.step(x[:, s], h.detach(), pos.detach() if cut_positions else pos,
                                         tau=0.7, hard=True)
        return pos.sum()

    (g,) = torch.autograd.grad(last_position(False), x)
    assert float(g[:, 0].abs().sum()) > 0
    (g_cut,) = torch.autograd.grad(last_position(True), x)
    assert float(g_cut[:, 0].abs().sum()) == 0.0  # control: no other path exists
    # And through the full recurrence of forward() the first step is reached as well.
    pos, _ = sizer(x, tau=0.7)
    (g_full,) = torch.autograd.grad(pos[:, -1].sum(), x)
    assert float(g_full[:, 0].abs().sum()) > 0


def test_gumbel_hard_sample_while_training_argmax_when_trading() -> None:
    torch.manual_seed(3)
    sizer = PositionSizer(SizerConfig(feature_dim=3, hidden=8))
    h, prev = sizer.init_state(5)
    x = torch.randn(5, 3)
    _, logits, w, pos = sizer.step(x, h, prev, tau=0.5, hard=True)
    assert torch.allclose(w.sum(-1), torch.ones(5)) and set(w.unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(pos, w.argmax(-1) / 10.0)
    _, logits, w, pos = sizer.step(x, h, prev, tau=None)
    assert torch.equal(w.argmax(-1), logits.argmax(-1))
    assert torch.allclose(pos, logits.argmax(-1) / 10.0)
    _, _, w_soft, _ = sizer.step(x, h, prev, tau=0.5, hard=False)
    assert float(w_soft.detach().max()) < 1.0 and w_soft.shape == (5, N_LEVELS)


def test_temperature_anneals_and_reset_rule() -> None:
    cfg = SizerConfig(feature_dim=1, tau_start=2.0, tau_end=0.5)
    assert temperature(cfg, 0.0) == pytest.approx(2.0)
    assert temperature(cfg, 1.0) == pytest.approx(0.5)
    assert temperature(cfg, 0.5) == pytest.approx(1.0)
    hour = 3_600_000
    flags = [is_reset_bar(t * hour, hour, 20) for t in range(100, 160)]
    assert sum(flags) == 3 and flags.index(True) == 0


def test_sizer_loss_terms() -> None:
    cfg = SizerConfig(feature_dim=1, fee=0.0, w_risk=0.0, w_opp=1.0, w_turn=0.0, risk="drawdown")
    r = torch.tensor([[0.01, -0.02, 0.01]])
    bull = torch.full((1, 3), BULL)
    full = torch.ones(1, 3)
    loss, parts = sizer_loss(full, r, bull, cfg)
    assert parts["rel_return"] == pytest.approx(0.0, abs=1e-7)  # fully invested = the bull benchmark
    assert parts["opportunity"] == pytest.approx(0.0)
    assert parts["risk"] == pytest.approx(2.0, abs=1e-5)  # drawdown in percent: +1, -2 -> 2 points
    _, flat = sizer_loss(torch.zeros(1, 3), r, bull, cfg)
    assert flat["opportunity"] == pytest.approx(2.0 / 3, abs=1e-6)  # missed +1% twice over 3 bars
    bear = torch.full((1, 3), BEAR)
    _, p = sizer_loss(torch.zeros(1, 3), r, bear, cfg)
    assert p["rel_return"] == 0.0 and p["opportunity"] == 0.0  # cash is the bear benchmark
    with pytest.raises(ModelError):
        SizerConfig(feature_dim=1, risk="variance")
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_a_state_restart_carries_the_held_position_and_its_first_step_pays_turnover() -> None:
    """Issue 13: a restart zeroes the hidden state only; the held position feeds the next step,
    and the loss charges the first step's change from it (no free trade at a restart)."""
    cfg = SizerConfig(feature_dim=3, hidden=8, steps=4, fee=0.001, w_risk=0.0, w_opp=0.0, w_turn=1.0)
    r, regime = torch.zeros(1, 3), torch.full((1, 3), BEAR)
    full = torch.ones(1, 3)
    _, held = sizer_loss(full, r, regime, cfg, prev=torch.ones(1))
    _, from_flat = sizer_loss(full, r, regime, cfg, prev=torch.zeros(1))
    assert held["turnover"] == 0.0 and from_flat["turnover"] == pytest.approx(1 / 3)
    assert sizer_loss(full, r, regime, cfg)[1] == from_flat  # default: held flat before

    torch.manual_seed(4)
    runner = SizerRunner(PositionSizer(cfg).eval())
    for _ in range(3):
        runner.step(torch.randn(1, 3))
    held_pos = float(runner.prev[0])
    runner.before_step(RESTART)
    assert float(runner.h.abs().sum()) == 0.0 and float(runner.prev[0]) == held_pos
    runner.before_step(FLAT)
    assert float(runner.prev[0]) == 0.0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_numpy_runner_steps_as_the_torch_cell(dtype: torch.dtype) -> None:
    """SizerRunner's NumPy step is PositionSizer.step (argmax, no sampling) to rounding: the same
    levels, hidden states and probabilities over a run with restarts and a flat start."""
    torch.manual_seed(11)
    sizer = PositionSizer(SizerConfig(feature_dim=6, hidden=8, steps=5)).to(dtype).eval()
    runner = SizerRunner(sizer)
    h, pos = sizer.init_state(1, dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    levels = set()
    for i in range(60):
        if i % 17 == 16:
            runner.before_step(FLAT)
            h, pos = sizer.init_state(1, dtype)
        elif i % 5 == 0:
            runner.before_step(RESTART)
            h, pos = sizer.init_state(1, dtype, pos)
        x = torch.randn(1, 6, dtype=dtype) * 3
        with torch.no_grad():
            h, logits, _, pos = sizer.step(x, h, pos, None)
        level, probs = runner.step(x)
        assert level == int(logits.argmax()) and float(runner.prev[0]) == float(pos[0])
        np.testing.assert_allclose(runner.h.numpy(), h.numpy(), atol=tol)
        np.testing.assert_allclose(probs, logits[0].softmax(-1).numpy(), atol=tol)
        levels.add(level)
    assert len(levels) > 2  # the run moved between levels


def test_restart_codes_flat_after_a_gap_and_carry_on_the_clock() -> None:
    hour = 3_600_000
    times = np.arange(100, 112) * hour
    usable = np.ones(12, dtype=bool)
    usable[5:7] = False  # a window across a gap: no step, the strategy is flat
    codes = restarts(times, hour, 4, usable)
    assert codes[0] == FLAT and codes[7] == FLAT  # the first bar, the first after the gap
    assert [int(i) for i in np.flatnonzero(codes == RESTART)] == [4, 8]  # clock-aligned: 104, 108
    assert codes[5] == codes[6] == KEEP
