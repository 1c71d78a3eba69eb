"""Attention rollout against hand-computed cases (Abnar & Zuidema 2020, with the issue's rules)."""

from __future__ import annotations

import pytest
import torch

from models.rollout import (
    REGIMES,
    attention_rollout,
    input_attribution,
    recent_share,
    regime_codes,
    regime_labels,
)


def t(rows: list[list[float]]) -> torch.Tensor:
    """One sample, one head: [1, 1, n, n]."""
    return torch.tensor(rows, dtype=torch.float64)[None, None]


A1 = [[0.5, 0.5], [0.0, 1.0]]
A2 = [[1.0, 0.0], [0.5, 0.5]]


def close(a: torch.Tensor, rows: list[list[float]]) -> None:
    torch.testing.assert_close(a, torch.tensor(rows, dtype=a.dtype).expand_as(a), atol=1e-12, rtol=0)


def test_single_layer_identity_attention_is_identity() -> None:
    eye = torch.eye(4, dtype=torch.float64).expand(3, 2, 4, 4)  # batch 3, 2 heads
    close(attention_rollout([eye]), torch.eye(4).tolist())


def test_two_layers_known_matrices_default_residual() -> None:
    # 0.5 I + 0.5 A1 = [[.75,.25],[0,1]]; 0.5 I + 0.5 A2 = [[1,0],[.25,.75]]; R = A2' @ A1'.
    r = attention_rollout([t(A1), t(A2)])
    close(r[0], [[0.75, 0.25], [0.1875, 0.8125]])


def test_order_of_product_is_later_layer_on_the_left() -> None:
    r = attention_rollout([t(A2), t(A1)])  # swapped: R = A1' @ A2'
    close(r[0], [[0.8125, 0.1875], [0.25, 0.75]])


@pytest.mark.parametrize(("fusion", "expected"), [
    ("mean", [[0.8, 0.2], [0.5, 0.5]]),
    ("max", [[1 / 1.4, 0.4 / 1.4], [0.5, 0.5]]),  # [[1,.4],[.8,.8]] re-normalised
    ("min", [[1.0, 0.0], [0.5, 0.5]]),            # [[.6,0],[.2,.2]] re-normalised
])
def test_head_fusion_modes(fusion: str, expected: list[list[float]]) -> None:
    heads = torch.tensor([[[1.0, 0.0], [0.2, 0.8]], [[0.6, 0.4], [0.8, 0.2]]], dtype=torch.float64)[None]
    r = attention_rollout([heads], head_fusion=fusion, residual_weight=0.0)
    close(r[0], expected)


def test_discard_ratio_zeroes_lowest_entries_then_renormalises() -> None:
    a = [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.25, 0.25, 0.5]]
    # floor(0.25 * 9) = 2 lowest off-diagonal entries: 0.1 at (1,0) and 0.2 at (0,2).
    r = attention_rollout([t(a)], discard_ratio=0.25, residual_weight=0.0)
    close(r[0], [[0.625, 0.375, 0.0], [0.0, 2 / 3, 1 / 3], [0.25, 0.25, 0.5]])


def test_discard_never_touches_the_diagonal() -> None:
    a = [[0.05, 0.5, 0.45], [0.3, 0.4, 0.3], [0.2, 0.3, 0.5]]
    # floor(0.12 * 9) = 1: the smallest entry is the diagonal 0.05, so 0.2 at (2,0) goes instead.
    r = attention_rollout([t(a)], discard_ratio=0.12, residual_weight=0.0)
    close(r[0], [[0.05, 0.5, 0.45], [0.3, 0.4, 0.3], [0.0, 0.375, 0.625]])
    # discard everything: only the diagonal is left -> identity.
    close(attention_rollout([t(a)], discard_ratio=1.0, residual_weight=0.0)[0], torch.eye(3).tolist())


def test_start_layer_skips_earlier_layers() -> None:
    r = attention_rollout([t(A1), t(A2)], start_layer=1)
    close(r[0], [[1.0, 0.0], [0.25, 0.75]])
    with pytest.raises(ValueError, match="start_layer"):
        attention_rollout([t(A1), t(A2)], start_layer=2)


def test_residual_weight_zero_is_the_plain_product() -> None:
    r = attention_rollout([t(A1), t(A2)], residual_weight=0.0)
    close(r[0], [[0.5, 0.5], [0.25, 0.75]])  # A2 @ A1


def test_residual_weight_one_is_identity() -> None:
    r = attention_rollout([t(A1), t(A2)], residual_weight=1.0)
    close(r[0], [[1.0, 0.0], [0.0, 1.0]])


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.3, 0.9])
def test_rows_sum_to_one_and_batch_equals_one_by_one(fusion: str, discard: float) -> None:
    g = torch.Generator().manual_seed(7)
    layers = [torch.randn(5, 4, 6, 6, generator=g).softmax(-1) for _ in range(3)]
    r = attention_rollout(layers, head_fusion=fusion, discard_ratio=discard)
    assert r.shape == (5, 6, 6)
    torch.testing.assert_close(r.sum(-1), torch.ones(5, 6))
    assert (r >= 0).all()
    for i in range(5):
        one = attention_rollout([a[i: i + 1] for a in layers], head_fusion=fusion, discard_ratio=discard)
        torch.testing.assert_close(r[i: i + 1], one)
    stacked = attention_rollout(torch.stack(layers), head_fusion=fusion, discard_ratio=discard)
    torch.testing.assert_close(stacked, r)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="head_fusion"):
        attention_rollout([t(A1)], head_fusion="median")
    with pytest.raises(ValueError, match="discard_ratio"):
        attention_rollout([t(A1)], discard_ratio=1.5)
    with pytest.raises(ValueError, match="residual_weight"):
        attention_rollout([t(A1)], residual_weight=-0.1)
    with pytest.raises(ValueError, match="at least one"):
        attention_rollout([])


def test_input_attribution_reads_one_row_or_the_mean() -> None:
    r = attention_rollout([t(A1), t(A2)])
    close(input_attribution(r), [[0.1875, 0.8125]])
    close(input_attribution(r, position=0), [[0.75, 0.25]])
    close(input_attribution(r, position=None), [[0.46875, 0.53125]])


def test_regime_from_recent_quarter_share() -> None:
    n = 8  # the most recent quarter is the last 2 steps
    def attribution(recent: float) -> list[float]:
        return [(1 - recent) / 6] * 6 + [recent / 2] * 2
    attr = torch.tensor([attribution(0.7), attribution(0.3), attribution(0.5), attribution(0.6)])
    torch.testing.assert_close(recent_share(attr), torch.tensor([0.7, 0.3, 0.5, 0.6]))
    labels, share = regime_labels(attr)
    assert labels == ["momentum", "mean_reversion", "mixed", "mixed"]  # 0.6 is not above 0.6
    assert share.shape == (4,)
    labels, _ = regime_labels(attr, momentum_above=0.45, reversion_below=0.35)
    assert labels == ["momentum", "mean_reversion", "momentum", "momentum"]
    assert [REGIMES[c] for c in regime_codes(torch.tensor([0.9, 0.1]))] == ["momentum", "mean_reversion"]
    assert n == attr.shape[1]
