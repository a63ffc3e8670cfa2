"""The demo's operator sweep: `attnreuse bench ops` on the ViT-like widths at a few N."""

from __future__ import annotations

import json
from pathlib import Path

from attnreuse.demo.config import DemoConfig

__all__ = ["op_sweep"]

DEMO_OPS = ("sdpa_mha", "dense_mha", "reuse", "taylor")


def op_sweep(cfg: DemoConfig, root: Path) -> list[dict]:
    """Records of `bench ops` (cached in root/ops.json) and its plot root/ops_vs_tokens.png."""
    from attnreuse.bench.ops import QUICK, OpsBenchConfig, plot, run_bench
    from attnreuse.bench.timing import write_records

    path = root / "ops.json"
    if not cfg.force and path.is_file():
        records = json.loads(path.read_text())
    else:
        quick = {k: v for k, v in QUICK.items() if k not in ("tokens", "batch")} if cfg.quick else {}
        config = OpsBenchConfig(
            ops=DEMO_OPS, shapes=("vit",), tokens=cfg.op_tokens, batch=(1,), threads=cfg.threads, **quick
        )
        records = run_bench(config)
        write_records(path, records)
    plot(records, root / "ops_vs_tokens.png")
    return records
