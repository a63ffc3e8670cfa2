"""Micro-measurements of this CPU for the `this-cpu` preset, with the project's measurement kit
(`attnreuse.measure`). torch is imported inside functions: the cost model's own code uses none of
it. (The process still has torch loaded, because `import attnreuse` registers the models with timm.)"""

from __future__ import annotations

from attnreuse.dataflow.cost import SOFTMAX_OPS_PER_ELEMENT

__all__ = ["measure_cpu"]


def measure_cpu(*, threads: int, seconds: float) -> tuple[float, float, float, float]:
    """(FP32 matmul MACs/s, softmax element-wise ops/s, copy bytes/s, first-touch s/byte).

    Matmul: `matmul_peak_gflops` (best of five 1536^3 products). Softmax: a 256 KiB [64, 1024] tile
    (cache-resident), median latency. Bandwidth: a 64 MiB copy (read + write counted, larger than
    the caches here), median latency. First touch: filling a freshly allocated 64 MiB tensor
    minus filling a reused one, per byte. Each median is taken over about `seconds` of calls.
    """
    import torch

    from attnreuse.measure import matmul_peak_gflops, measure_latency, set_threads

    previous = torch.get_num_threads()
    set_threads(threads)
    try:
        macs_per_s = matmul_peak_gflops(threads) * 1e9 / 2
        scores = torch.randn(64, 1024)
        probs = torch.empty_like(scores)
        sm = measure_latency(lambda: torch.softmax(scores, -1, out=probs), min_time_s=seconds)
        src = torch.ones(16 * 1024 * 1024)
        dst = torch.empty_like(src)
        cp = measure_latency(lambda: dst.copy_(src), warmup=1, repeats=3, min_time_s=seconds)
        fill = measure_latency(lambda: dst.fill_(0.0), warmup=1, repeats=3, min_time_s=seconds)
        fresh = measure_latency(lambda: torch.empty_like(src).fill_(0.0), warmup=1, repeats=3, min_time_s=seconds)
    finally:
        torch.set_num_threads(previous)
    ops_per_s = SOFTMAX_OPS_PER_ELEMENT * scores.numel() / (sm.latency_ms_median / 1e3)
    bytes_per_s = 2 * src.numel() * src.element_size() / (cp.latency_ms_median / 1e3)
    nbytes = src.numel() * src.element_size()
    fault_s_per_byte = max(0.0, fresh.latency_ms_median - fill.latency_ms_median) / 1e3 / nbytes
    return macs_per_s, ops_per_s, bytes_per_s, fault_s_per_byte
