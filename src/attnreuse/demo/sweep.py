"""The demo's operator sweep: `attnreuse bench ops` on the ViT-like widths at a few N."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from attnreuse._io import atomic_write_json
from attnreuse.demo.config import DemoConfig

__all__ = ["op_sweep"]

DEMO_OPS = ("sdpa_mha", "dense_mha", "reuse", "taylor")


def op_sweep(cfg: DemoConfig, root: Path) -> list[dict]:
    """Records of `bench ops` (cached in root/ops.json) and its plot root/ops_vs_tokens.png."""
    from attnreuse.bench.ops import QUICK, OpsBenchConfig, plot, run_bench
    from attnreuse.measure import write_records

    path, config_path = root / "ops.json", root / "ops.config.json"
    quick = {k: v for k, v in QUICK.items() if k not in ("tokens", "batch")} if cfg.quick else {}
    config = OpsBenchConfig(
        ops=DEMO_OPS, shapes=("vit",), tokens=cfg.op_tokens, batch=(1,), threads=cfg.threads, **quick
    )
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    if not cfg.force and path.is_file() and config_path.is_file() and json.loads(config_path.read_text()) == wanted:
        records = json.loads(path.read_text())
    else:
        records = run_bench(config)
        write_records(path, records)
        atomic_write_json(config_path, wanted)
    plot(records, root / "ops_vs_tokens.png")
    return records
