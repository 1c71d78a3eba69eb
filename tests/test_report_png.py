"""The PNGs: real, non-blank images of exactly the promised size, for every strategy kind and for
runs with nothing to draw."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from bot.report.data import load_report_data
from bot.report.png import PNG_SIZE, write_pngs
from storage import queries as q
from storage.db import open_database
from tests.test_report_support import journal_runs, png_size


def assert_real_png(path: Path) -> None:
    assert png_size(path) == PNG_SIZE, path
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (PNG_SIZE[1], PNG_SIZE[0])
    # Not blank: many distinct colours, and ink covers a real share of the canvas.
    flat = pixels[..., :3].reshape(-1, 3)
    assert len(np.unique(flat[::97], axis=0)) > 8, f"{path} looks blank"
    background = flat[0]
    assert np.mean(np.any(np.abs(flat - background) > 0.05, axis=1)) > 0.002, f"{path} is nearly empty"


@pytest.mark.parametrize(("key", "expected"), [
    ("rollout", ["summary", "equity", "price", "monthly", "rollout"]),
    ("dsc", ["summary", "equity", "price", "monthly", "dsc"]),
    ("interrupted", ["summary", "equity", "price", "monthly", "gru_sizer"]),
    ("failed_at_start", ["summary", "rollout"]),
])
def test_pngs_are_real_images_of_the_right_size(tmp_path: Path, key: str, expected: list[str]) -> None:
    runs = journal_runs()
    db = open_database(runs.url)
    data = load_report_data(db, q.resolve_run(db, runs.ids[key]))
    paths = write_pngs(data, tmp_path, theme="dark" if key == "dsc" else "light")
    assert [p.stem for p in paths] == expected
    for p in paths:
        assert_real_png(p)
