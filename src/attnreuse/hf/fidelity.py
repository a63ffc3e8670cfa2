"""How faithfully a converted encoder reproduces the original on held-out text.

- cosine: mean over texts of cos(pooled_converted, pooled_original), where pooled is the mean of the
  last hidden states over real tokens (sentence-transformers' pooling for all-MiniLM-L6-v2);
- top-10 overlap: for each held-out text, its 10 nearest other held-out texts by cosine of pooled
  embeddings under each model; the mean fraction they share (retrieval agreement);
- label agreement (models with a classification head): fraction of equal argmax labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Bf16Encoder", "batches", "bf16_fidelity", "compare", "embed", "fidelity", "mean_pool", "real_positions",
           "topk_overlap"]


def batches(tokenizer, texts: list[str], batch_size: int, max_length: int):
    """Tokenised batches (padded to the longest in the batch, truncated to `max_length`)."""
    for i in range(0, len(texts), batch_size):
        yield tokenizer(texts[i : i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def real_positions(model: nn.Module, batch: dict, length: int) -> Tensor:
    """[B, length]: 1 where the hidden states of `batch` are real: the tokenizer's mask for text;
    for waveforms, the frames the model's conv feature encoder makes of each clip's real samples
    (Whisper: of its real mel frames, `attnreuse.hf.audio.frame_mask`); for images, every token."""
    if "pixel_values" in batch:  # every image makes the same tokens, all real
        return torch.ones(batch["pixel_values"].shape[0], length, dtype=torch.long)
    if "input_values" in batch or "input_features" in batch:
        from attnreuse.hf.audio import frame_mask

        return frame_mask(model, batch["attention_mask"], length)
    return batch["attention_mask"]


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """hidden [B, N, C], mask [B, N] (1 = real token) -> [B, C]."""
    m = mask[..., None].to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1)


# no_grad, not inference_mode: a model may cache a tensor it makes in a forward (BEiT's relative
# position index, in an lru_cache shared by every model of its class), and one made under
# inference_mode cannot be saved for backward when distillation later trains in the same process
@torch.no_grad()
def embed(model: nn.Module, tokenizer, texts: list[str], *, batch_size: int = 32, max_length: int = 128) -> tuple[Tensor, Tensor | None]:
    """(pooled embeddings [T, C], logits [T, L] or None) of `texts`, in their order.

    Texts are batched in order of length (so a batch pads to nearly its own length) and the
    results put back in the given order."""
    from attnreuse.hf.hosts import length_limit

    max_length = length_limit(model.config, max_length)  # a text longer than the model's positions is cut there
    sized = all(hasattr(t, "__len__") for t in texts)  # texts and clips; image paths all make one length
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sized else list(range(len(texts)))
    pooled, logits = [], []
    for batch in batches(tokenizer, [texts[i] for i in order], batch_size, max_length):
        out = model(**batch, output_hidden_states=True)
        hidden = out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out.hidden_states[-1]
        pooled.append(mean_pool(hidden, real_positions(model, batch, hidden.shape[1])))
        if getattr(out, "logits", None) is not None:
            logits.append(out.logits)
    back = torch.empty(len(order), dtype=torch.long)
    back[torch.tensor(order)] = torch.arange(len(order))
    return torch.cat(pooled)[back], (torch.cat(logits)[back] if logits else None)


def topk_overlap(a: Tensor, b: Tensor, k: int = 10) -> float:
    """Mean fraction of shared k nearest neighbours (cosine, self excluded) of rows of a vs rows of b."""
    if a.shape[0] <= k:
        raise ValueError(f"top-{k} overlap needs more than {k} texts, got {a.shape[0]}")

    def neighbours(x: Tensor) -> Tensor:
        x = F.normalize(x.double(), dim=-1)
        sim = x @ x.T
        sim.fill_diagonal_(-2.0)
        return sim.topk(k, dim=-1).indices

    na, nb = neighbours(a), neighbours(b)
    shared = (na[:, :, None] == nb[:, None, :]).any(-1).double().sum(-1)
    return float(shared.mean() / k)


def compare(e: Tensor, logits: Tensor | None, e_ref: Tensor, logits_ref: Tensor | None, k: int = 10) -> dict:
    """Fidelity of embeddings `e` [T, C] (and logits) against the reference's, as `fidelity`."""
    agree = None
    if logits is not None and logits_ref is not None:
        agree = float((logits.argmax(-1) == logits_ref.argmax(-1)).double().mean())
    return {
        "cosine": float(F.cosine_similarity(e.double(), e_ref.double(), dim=-1).mean()),
        "topk_overlap": topk_overlap(e, e_ref, k),
        "k": k,
        "texts": len(e),
        "label_agreement": agree,
    }


def fidelity(model: nn.Module, reference: nn.Module | tuple, tokenizer, texts: list[str], *, batch_size: int = 32,
             max_length: int = 128, k: int = 10) -> dict:
    """{"cosine", "topk_overlap", "k", "texts", "label_agreement" (None without a head)} of model vs
    reference; `reference` may be its `embed` output, computed once for several models."""
    ref = reference if isinstance(reference, tuple) else embed(reference, tokenizer, texts, batch_size=batch_size, max_length=max_length)
    return compare(*embed(model, tokenizer, texts, batch_size=batch_size, max_length=max_length), *ref, k=k)


class Bf16Encoder:
    """A bf16 copy of an encoder, called like it where `embed` calls one: floating inputs are cast
    to bf16, and the hidden states and logits come back in float32 (the embeddings' cosine and
    neighbours are then compared at full precision). Anything else is read from the copy."""

    def __init__(self, model: nn.Module) -> None:
        from attnreuse.hf.speed import bf16_copy

        self.model = bf16_copy(model)

    def __getattr__(self, name: str):
        if name in ("model", "module"):  # not set yet, or DistributedDataParallel's
            raise AttributeError(name)
        return getattr(self.model, name)

    def __call__(self, output_hidden_states: bool = False, **batch):
        from types import SimpleNamespace

        from attnreuse.hf.speed import bf16_inputs

        out = self.model(**bf16_inputs(batch), output_hidden_states=True)  # a model without last_hidden_state
        hidden = out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out.hidden_states[-1]
        logits = getattr(out, "logits", None)
        return SimpleNamespace(last_hidden_state=hidden.float(), hidden_states=None,
                               logits=None if logits is None else logits.float())


def bf16_fidelity(model: nn.Module, reference: tuple, tokenizer, texts: list[str]) -> dict:
    """`fidelity` of `model` run in bf16 against `reference` (the original's float32 `embed` of
    `texts`): what deploying it in bf16 keeps."""
    return fidelity(Bf16Encoder(model), reference, tokenizer, texts)
