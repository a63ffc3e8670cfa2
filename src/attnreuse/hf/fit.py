"""Fitting a converted model's new attention parts, layer by layer, before any distillation.

Teacher forcing: both models read the same batch; every plan layer of the converted model is
handed the original's input to that layer (so no error carries from one layer to the next) and
its output is pulled towards the original attention module's output (MSE over real tokens).
Only the plan layers' cores train, with Adam; maps and previous outputs still flow between plan
layers as they do at inference. A start for `distill`, cheap because each layer's gradient stays
inside the layer: the fix for kinds whose zero-shot start is weak (reuse's rank-d map, skip's
untrained Phi).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnreuse.hf.fidelity import real_positions
from attnreuse.hf.hosts import host_for, length_limit
from attnreuse.hf.modules import PlanAttention

__all__ = ["fit_layers"]


def fit_layers(converted: nn.Module, original: nn.Module, tokenizer, texts: list[str], *, steps: int = 100,
               batch_size: int = 16, max_length: int = 128, lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Fit the cores of `converted` whose kind is not exact; returns the loss of every step."""
    import random

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"--fit-steps must be an int >= 0, got {steps!r}")
    max_length = length_limit(original.config, max_length)
    plan_layers = [m for m in converted.modules() if isinstance(m, PlanAttention)]
    originals = [m for _, _, m in host_for(original.config).attention_modules(original)]
    trainable = [p for m in plan_layers if m.kind.name != "mha" for p in m.core.parameters()]
    if steps == 0 or not trainable:
        return []
    inputs: list = [None] * len(originals)
    targets: list = [None] * len(originals)
    outputs: list = [None] * len(originals)

    def grab(i):
        def hook(module, args, kwargs, out):
            inputs[i] = (kwargs.get("hidden_states", args[0] if args else None)).detach()
            targets[i] = out[0].detach()
        return hook

    def force(i):
        def pre(module, args, kwargs):
            if args:
                return (inputs[i], *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": inputs[i]}
        return pre

    def keep(i):
        def hook(module, args, kwargs, out):
            outputs[i] = out[0]
        return hook

    handles = [m.register_forward_hook(grab(i), with_kwargs=True) for i, m in enumerate(originals)]
    handles += [m.register_forward_pre_hook(force(i), with_kwargs=True) for i, m in enumerate(plan_layers)]
    handles += [m.register_forward_hook(keep(i), with_kwargs=True) for i, m in enumerate(plan_layers)]
    requires = {p: p.requires_grad for p in converted.parameters()}
    for p in converted.parameters():
        p.requires_grad_(False)
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=lr)
    rng, losses = random.Random(seed), []
    original.eval()
    converted.eval()
    try:
        for _ in range(steps):
            batch = tokenizer(rng.sample(texts, min(batch_size, len(texts))), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            with torch.no_grad():
                original(**batch)
            converted(**batch)
            real = real_positions(converted, batch, targets[0].shape[1]).bool()
            loss = sum(F.mse_loss(o[real], t[real]) for o, t, m in zip(outputs, targets, plan_layers) if m.kind.name != "mha")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        for h in handles:
            h.remove()
        for p, flag in requires.items():
            p.requires_grad_(flag)
    return losses
