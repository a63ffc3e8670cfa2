"""Latency of converted encoders against the original, paired round by round, and their MAC ideal.

Every model runs on the same input (batch x tokens, random token ids, no padding) in interleaved
rounds (`attnreuse.measure.measure_interleaved`); each plan's speed-up is the median over rounds of
baseline / plan, where both were timed next to each other. The MAC ideal of a plan is
MACs(original) / MACs(plan), both counted by PyTorch's FLOP counter on that input; "of ideal" is
speed-up / ideal. Runtimes: "eager" (PyTorch), "ort" (ONNX Runtime, each model exported) and
"ort-fused" (the same export with every attention that can be rewritten into com.microsoft
MultiHeadAttention, `attnreuse.onnx_fuse`; the record counts the fused subgraphs) and "ort-int8"
(ONNX Runtime's dynamic int8 of each export, `hf export --int8`; its rounds also time the
original's float32 export, so each int8 record has its paired speed-up over that too:
`speedup_vs_baseline_fp32`), the names `attnreuse bench models` gives them; "ort-int8-fused" is the
int8 export with its attention fused (`hf export --int8 --fused-attention mha`), timed the same way
against the original's fused float32 export. "eager-bf16" runs each model in PyTorch with bf16
weights and floating inputs (`bf16_copy`; native on CPUs with AMX / AVX512-BF16 / Arm BF16, emulated
elsewhere, which each record says), its rounds timing the original's float32 eager model too.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from pathlib import Path

import torch
from torch import nn

from attnreuse.onnx_fuse import RUNTIME_OP

__all__ = ["BF16", "RUNTIMES", "bf16_copy", "bf16_inputs", "check_tokens", "default_tokens", "encoder_input",
           "export_path", "measure_speed"]

BF16 = "eager-bf16"
RUNTIMES = ("eager", BF16, "ort", "ort-fused", "ort-int8", "ort-int8-fused")
_FUSED, _INT8 = ("ort-fused", "ort-int8-fused"), ("ort-int8", "ort-int8-fused")


def bf16_copy(model: nn.Module) -> nn.Module:
    """A bf16 copy of `model` in eval mode (weights and buffers; the original is left in float32)."""
    return copy.deepcopy(model).to(torch.bfloat16).eval()


def bf16_inputs(inputs: dict) -> dict:
    """`inputs` with each floating tensor (pixel values, audio features) in bf16; ids and masks as they are."""
    return {k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}


def encoder_input(config, batch: int, tokens: int, seed: int = 0) -> dict:
    """input_ids (random ids above the special tokens) and an all-ones attention_mask, [batch, tokens];
    for speech models a random waveform of the samples that make `tokens` frames, [batch, samples];
    for Whisper random log-mel features [batch, num_mel_bins, 2 * tokens], where tokens must be
    the encoder's max_source_positions (its one input length); for vision models random
    pixel_values [batch, channels, H, W] (tokens: the one length they make, `image_tokens`)."""
    from attnreuse.hf.audio import fixed_frames, mel_frames
    from attnreuse.hf.hosts import VISION_INPUTS, host_for

    check_tokens(config, tokens)
    if host_for(config).inputs in VISION_INPUTS:
        from attnreuse.hf.images import image_hw

        g = torch.Generator().manual_seed(seed)
        return {"pixel_values": torch.randn(batch, config.num_channels, *image_hw(config), generator=g)}
    fixed = fixed_frames(config)
    if fixed is not None:
        g = torch.Generator().manual_seed(seed)
        mel = mel_frames(config)
        return {"input_features": torch.randn(batch, config.num_mel_bins, mel, generator=g),
                "attention_mask": torch.ones(batch, mel, dtype=torch.long)}
    if host_for(config).inputs == "input_values":
        from attnreuse.hf.audio import samples_for_frames

        g = torch.Generator().manual_seed(seed)
        samples = samples_for_frames(config, tokens)
        return {"input_values": torch.randn(batch, samples, generator=g),
                "attention_mask": torch.ones(batch, samples, dtype=torch.long)}
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(1000, config.vocab_size // 2), config.vocab_size, (batch, tokens), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones(batch, tokens, dtype=torch.long)}


def check_tokens(config, tokens: int) -> None:
    """Raise ValueError naming --tokens unless a model of `config` takes `tokens` frames or tokens:
    a positive int, at most a text model's positions, exactly a Whisper encoder's max_source_positions."""
    from attnreuse.hf.hosts import fixed_length, max_tokens

    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"--tokens must be a positive int, got {tokens!r}")
    fixed = fixed_length(config)
    if fixed is not None and tokens != fixed:
        what = (f"a Whisper encoder takes exactly max_source_positions = {fixed} frames" if config.model_type == "whisper"
                else f"a {config.model_type} encoder at image_size {config.image_size} runs on exactly {fixed} tokens")
        raise ValueError(f"--tokens {tokens}: {what} (leave --tokens out, or give that)")
    limit = max_tokens(config)
    if limit is not None and tokens > limit:
        raise ValueError(f"--tokens {tokens} exceeds the {limit} positions the {config.model_type} model takes")


def default_tokens(config, tokens: int | None, default: int = 512) -> int:
    """The sequence length a job costs or times at: `tokens` when given (checked: `check_tokens`),
    else `default` (at most a text model's positions), or the one length a Whisper encoder takes
    (max_source_positions)."""
    if tokens is not None:
        check_tokens(config, tokens)
        return tokens
    from attnreuse.hf.hosts import fixed_length, length_limit

    fixed = fixed_length(config)
    return length_limit(config, default) if fixed is None else fixed


def _eager_call(model: nn.Module, inputs: dict):
    def call():
        with torch.inference_mode():
            return model(**inputs)

    return call


def export_path(workdir: str | Path, name: str, fused: str | None = None, int8: bool = False) -> Path:
    """Where `measure_speed` exports model `name` for a runtime (in its `workdir` when given)."""
    return Path(workdir) / f"{name}.{fused or 'plain'}{'.int8' if int8 else ''}.onnx"


def _exports(models: dict[str, nn.Module], baseline: str, inputs: dict, workdir: Path, threads: int,
             runtimes: tuple[str, ...]) -> dict:
    """(model name, fused op or None, int8) -> `HFExportResult` for every ONNX Runtime graph the
    runtimes time: each model's export per runtime, and the baseline's float32 export fused alike
    beside each int8 runtime. An int8 export keeps the float32 graph it was made from when that
    graph is timed too, so each model is traced and checked once per fused op, not twice."""
    from attnreuse.hf.export import export_encoder

    wanted = {(name, RUNTIME_OP if r in _FUSED else None, r in _INT8)
              for r in runtimes if r not in ("eager", BF16) for name in models}  # runtimes: checked by measure_speed
    wanted |= {(baseline, op, False) for (_, op, int8) in wanted if int8}
    made = {}
    # the speed test's input is random tokens: the int8 graph's fidelity is the eval's to judge, not a gate here
    for name, op, int8 in sorted(wanted, key=lambda k: (not k[2], k[0], k[1] or "")):  # int8 first
        if (name, op, int8) in made:
            continue
        keep = int8 and (name, op, False) in wanted
        result = export_encoder(models[name], export_path(workdir, name, op, int8), inputs, threads=threads,
                                fused_attention=op, int8=int8, min_cosine=-1.0,
                                float32_path=export_path(workdir, name, op) if keep else None)
        made[(name, op, int8)] = result
        if keep:
            made[(name, op, False)] = result.float32
    return made


def _ort_call(result, inputs: dict, threads: int):
    """A no-argument call of the exported graph `result` (an `HFExportResult`) on `inputs`."""
    from attnreuse.hf.export import input_names, ort_encoder_session

    session = ort_encoder_session(result.path, threads=threads)
    feeds = {k: inputs[k].numpy() for k in input_names(inputs)}
    return lambda: session.run(None, feeds)


_FP32 = ("float32 form of the baseline",)  # its key among an ort-int8 / eager-bf16 block's calls (no model is named so)


def _vs_fp32(medians: dict, name, fp32_ms: float) -> dict:
    """An ort-int8 record's speed-up over the original's float32 ORT export (an eager-bf16 one's: over
    the original in float32 eager), paired round by round."""
    from attnreuse.measure import paired_ratio

    ratio, low, high = paired_ratio(medians[_FP32], medians[name])
    return {"baseline_fp32_latency_ms_median": fp32_ms, "speedup_vs_baseline_fp32": ratio,
            "speedup_vs_baseline_fp32_min": low, "speedup_vs_baseline_fp32_max": high}


def _frozen_macs(model: nn.Module, inputs: dict, count_call_macs) -> int:
    """MACs of one call, counted with the parameters frozen: the FLOP counter's module tracker hooks
    the gradient of every module input that requires one, which fails under inference mode when a
    module is called on parameters (wav2vec2's weight-normed positional convolution: its
    parametrization is a module applied to the weight's two parameters)."""
    flags = {p: p.requires_grad for p in model.parameters()}
    model.requires_grad_(False)
    try:
        return count_call_macs(_eager_call(model, inputs))
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)


def measure_speed(models: dict[str, nn.Module], baseline: str, config, *, tokens: int, batch: int = 1,
                  runtimes: tuple[str, ...] = ("eager",), rounds: int = 10, repeats: int = 30,
                  warmup: int = 3, threads: int = 2, workdir: str | Path | None = None) -> list[dict]:
    """One record per model x runtime: latency, paired speed-up over `baseline` and MAC ideal.
    The ONNX exports go to a temporary directory, or stay in `workdir` (`export_path` names them)."""
    from attnreuse.cpu_units import dtype_support
    from attnreuse.measure import count_call_macs, machine_record, measure_interleaved, paired_ratio, set_threads

    if baseline not in models:
        raise ValueError(f"baseline {baseline!r} is not among the models {list(models)}")
    set_threads(threads)
    inputs = encoder_input(config, batch, tokens)
    macs = {name: _frozen_macs(m, inputs, count_call_macs) // batch for name, m in models.items()}
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {unknown[0]!r}")
    records = []
    with contextlib.nullcontext(workdir) if workdir is not None else tempfile.TemporaryDirectory() as tmp:
        exported = _exports(models, baseline, inputs, Path(tmp), threads, runtimes)
        for runtime in runtimes:
            fused = {}
            if runtime == "eager":
                calls = {name: _eager_call(m, inputs) for name, m in models.items()}
            elif runtime == BF16:
                calls = {name: _eager_call(bf16_copy(m), bf16_inputs(inputs)) for name, m in models.items()}
                calls[_FP32] = _eager_call(models[baseline], inputs)  # bf16's own gain, paired
            else:
                op, int8 = RUNTIME_OP if runtime in _FUSED else None, runtime in _INT8
                calls = {name: _ort_call(exported[(name, op, int8)], inputs, threads) for name in models}
                fused = {name: exported[(name, op, int8)].fused_attention_nodes for name in models} if op else {}
                if int8:  # the original's float32 export (fused alike) timed in the same rounds: int8's own gain, paired
                    calls[_FP32] = _ort_call(exported[(baseline, op, False)], inputs, threads)
            medians: dict = {}
            stats = measure_interleaved(calls, rounds=rounds, warmup=warmup, repeats=repeats, round_medians_ms=medians)
            for name, st in stats.items():
                if isinstance(st, Exception):
                    raise RuntimeError(f"{name if name != _FP32 else baseline} failed under {runtime}: {st}") from st
                if name == _FP32:
                    continue
                speedup, low, high = paired_ratio(medians[baseline], medians[name])
                ideal = macs[baseline] / macs[name]
                records.append(machine_record(
                    model=name, runtime=runtime, tokens=tokens, batch=batch, threads=threads,
                    dtype="int8" if runtime in _INT8 else "bfloat16" if runtime == BF16 else "float32",
                    **({"dtype_execution": dtype_support("bfloat16")["execution"]} if runtime == BF16 else {}),
                    latency_ms_median=st.latency_ms_median, latency_ms_p90=st.latency_ms_p90, macs=macs[name], speedup=speedup,
                    speedup_min=low, speedup_max=high, mac_ideal=ideal, of_ideal=speedup / ideal,
                    baseline=baseline, rounds=rounds,
                    **({"fused_attention": RUNTIME_OP, "fused_attention_nodes": fused[name]} if fused else {}),
                    **(_vs_fp32(medians, name, stats[_FP32].latency_ms_median) if _FP32 in medians else {}),
                ))
    return records
