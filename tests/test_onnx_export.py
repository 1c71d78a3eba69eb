"""The ONNX exports kept beside a checkpoint (models.onnx_backend): tagged with the model they came
from, reused while the tag matches, exported again for another model or a broken file, and
exported into a temporary folder where the checkpoint's folder cannot be written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bot.errors import ModelError
from models import onnx_backend
from models.onnx_backend import OnnxRunner, ensure_export, export_onnx, export_tag


def _module(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return OnnxRunner(path).run(x)[0]


def _expected(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
EXAMPLE = torch.zeros(1, 4)


def test_an_export_is_tagged_and_reused_while_the_tag_matches(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    a = _module(1)
    path = ensure_export(a, EXAMPLE, tmp_path / "m.probs.onnx", ["y"], "model-a")
    assert path == tmp_path / "m.probs.onnx" and export_tag(path) == "model-a"
    np.testing.assert_allclose(_outputs(path, X), _expected(a, X), atol=1e-6)
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left behind

    def no_export(*args: object, **kw: object) -> Path:
        raise AssertionError("exported again although the tag matches")

    monkeypatch.setattr(onnx_backend, "export_onnx", no_export)
    assert ensure_export(_module(2), EXAMPLE, path, ["y"], "model-a") == path


def test_another_model_or_a_broken_file_is_exported_again(tmp_path: Path) -> None:
    path = tmp_path / "m.probs.onnx"
    ensure_export(_module(1), EXAMPLE, path, ["y"], "model-a")
    b = _module(2)
    assert ensure_export(b, EXAMPLE, path, ["y"], "model-b") == path
    assert export_tag(path) == "model-b"
    np.testing.assert_allclose(_outputs(path, X), _expected(b, X), atol=1e-6)

    path.write_bytes(b"not an onnx file")  # a half-written copy, say
    assert export_tag(path) is None
    ensure_export(b, EXAMPLE, path, ["y"], "model-b")
    np.testing.assert_allclose(_outputs(path, X), _expected(b, X), atol=1e-6)


def test_an_unwritable_folder_exports_into_a_temporary_one(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the checkpoint's folder should be")
    with pytest.raises(ModelError, match="ONNX export"):
        export_onnx(_module(1), EXAMPLE, blocker / "m.probs.onnx", ["y"], "model-a")
    a = _module(1)
    path = ensure_export(a, EXAMPLE, blocker / "m.probs.onnx", ["y"], "model-a")
    assert path.name == "m.probs.onnx" and path.parent != blocker and export_tag(path) == "model-a"
    np.testing.assert_allclose(_outputs(path, X), _expected(a, X), atol=1e-6)
