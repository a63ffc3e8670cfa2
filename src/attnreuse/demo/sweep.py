"""Stage 4: the attention operators against N (`attnreuse bench ops`, batch 1, ViT widths).

Reuse Attention (one map for 8 value heads), ViTALiTy's Taylor attention and attnreuse's own
multi-head attention (FLAT row tiles, `flat_mha`) against PyTorch's fused SDPA: latency and the
peak extra memory of one call.
"""

from __future__ import annotations

import sys
from pathlib import Path

from attnreuse.demo.config import DemoConfig

__all__ = ["run_ops"]

_KEEP = ("op", "tokens", "batch", "qk_heads", "v_heads", "qk_dim", "v_dim", "latency_ms_median", "latency_ms_p90",
         "peak_bytes", "gflops_per_s", "fraction_of_matmul_peak", "speedup_vs_sdpa_mha", "speedup_vs_sdpa_mha_paired",
         "speedup_vs_sdpa_mha_paired_range", "note")


def run_ops(cfg: DemoConfig, root: Path) -> dict:
    from attnreuse.bench.ops import OpsBenchConfig, run_bench

    print(f"[demo] ops: {', '.join(cfg.op_ops)} at N = {', '.join(map(str, cfg.op_tokens))}", file=sys.stderr, flush=True)
    config = OpsBenchConfig(ops=cfg.op_ops, shapes=("vit",), tokens=cfg.op_tokens, batch=(1,), threads=cfg.threads,
                            repeats=cfg.op_repeats, min_time_s=cfg.op_min_time_s,
                            matmul_size=256 if cfg.quick else 1024)
    records = run_bench(config)
    machine = records[0]["machine"] if records else {}
    return {"matmul_peak_gflops": machine.get("matmul_peak_gflops"),
            "records": [{k: r.get(k) for k in _KEEP} for r in records]}
