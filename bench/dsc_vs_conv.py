"""DSC vs standard conv: parameters, multiply-adds, latency and out-of-sample accuracy / Sharpe.

Both classifiers are trained on the same BTCUSDT 1h data, split, features and seed (the
``bot train --strategy dsc`` defaults, only ``arch`` and ``kernel_size`` change), for each kernel
size in the sweep. Per-block cost ratio DSC / standard = 1/C_out + 1/K in 1-D, so separability
pays more as K grows. Test-split numbers are out of sample; Sharpe is the card's fee-aware
bar-by-bar signal backtest on the test split.
Usage: python bench/dsc_vs_conv.py [--kernels 3 5 7 9] [--data FILE]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("BOT_DATA_DIR", ROOT.parent / "shared" / "data"))

torch.set_num_threads(1)


def latency_us(fn, iters: int = 300) -> float:
    for _ in range(50):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts) * 1e6)


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from bot.feeds.replay import load_candles
    from models.checkpoint import load_checkpoint
    from models.dsc import build, count_macs, count_params
    from models.dsc_train import DSCConfig, train_dsc
    from models.onnx_backend import OnnxRunner, export_onnx

    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", type=int, nargs="+", default=[3, 5, 7, 9])
    ap.add_argument("--data", default=str(DATA / "bybit_BTCUSDT_1h.csv.gz"))
    args = ap.parse_args()
    data = load_candles(args.data, symbol="BTCUSDT", timeframe="1h", bar_ms=3_600_000)
    tmp = Path(tempfile.mkdtemp(prefix="dsc_vs_conv_"))
    console = Console(width=160, stderr=True)
    table = Table(title=f"DSC vs standard conv on {Path(args.data).name} (test split = out of sample, "
                        "fee 0.1%/side, 1 thread)")
    for col in ("K", "model", "params", "MACs", "MACs ratio", "torch p50 us", "ORT p50 us", "train s",
                "epochs", "test acc", "test bal.acc", "test macro F1", "test Sharpe", "test return"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for k in args.kernels:
        rows = {}
        for arch in ("standard_conv", "dsc"):
            cfg = DSCConfig(arch=arch, kernel_size=k)
            path = train_dsc(data, cfg, fee_rate=0.001, long_only=False, symbol="BTCUSDT", timeframe="1h",
                             out=tmp / f"{arch}_k{k}.pt", progress=True, console=console)
            meta = load_checkpoint(path).meta
            net = build(arch, meta.hparams)
            load_checkpoint(path).load_into("model", net)
            f, w = meta.hparams["n_features"], meta.window
            x = torch.randn(1, f, w)
            with torch.inference_mode():
                t_torch = latency_us(lambda net=net, x=x: net(x))
            onnx = export_onnx(net, torch.zeros(1, f, w), tmp / f"{arch}_k{k}.onnx", ["logits"])
            ort = OnnxRunner(onnx)
            xn = x.numpy()
            t_ort = latency_us(lambda ort=ort, xn=xn: ort.run(xn))
            rows[arch] = (count_params(net), count_macs(net, f, w), t_torch, t_ort, meta.metrics)
        base_macs = rows["standard_conv"][1]
        for arch, (params, macs, t_torch, t_ort, m) in rows.items():
            test, tr = m["test"], m["training"]
            table.add_row(str(k), arch, f"{params:,}", f"{macs:,}", f"{macs / base_macs:.2f}", f"{t_torch:,.0f}",
                          f"{t_ort:,.0f}", f"{tr['seconds']:.0f}", str(tr["epochs_run"]), f"{test['accuracy']:.4f}",
                          f"{test['balanced_accuracy']:.4f}", f"{test['macro_f1']:.4f}",
                          f"{test['trading_after_fees']['sharpe']:.2f}",
                          f"{test['trading_after_fees']['total_return'] * 100:.2f}%")
        dsc, std = rows["dsc"], rows["standard_conv"]
        acc_ratio = dsc[4]["test"]["accuracy"] / std[4]["test"]["accuracy"]
        console.print(f"K={k}: DSC accuracy / standard = {acc_ratio:.3f}, MACs ratio {dsc[1] / std[1]:.3f}")
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
