"""How alike attention is across heads and layers: the observation every reuse paper rests on.

- head cosine: per layer, cos(A_h, A_g) between the flattened N x N maps of heads h and g, averaged
  over images -> [H, H].
- layer map cosine: cos(A_l[h], A_m[h]) for the same head index h (the pairing cross-layer map
  sharing applies), averaged over heads and images -> [L, L]; NaN where a layer has no map.
- layer output CKA: linear CKA (Kornblith et al. 2019) between the attention outputs Z_l, Z_m
  ([B*N, C], tokens as samples), as SkipAt measures the redundancy of MSA outputs -> [L, L].
Layers whose maps or token grids differ in shape (UniForm stages) are not compared: NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnreuse.capture import LayerCapture
from attnreuse.measure import linear_cka

__all__ = ["head_cosine", "layer_map_cosine", "layer_output_cka", "linear_cka"]


def head_cosine(maps: Tensor) -> Tensor:
    """maps: [B, H, N, M] -> [H, H]: mean over images of the cosine between heads' flattened maps."""
    if maps.dim() != 4:
        raise ValueError(f"maps must be [B, H, N, M], got shape {tuple(maps.shape)}")
    flat = F.normalize(maps.flatten(2).double(), dim=-1)  # [B, H, N*M]
    return (flat @ flat.transpose(1, 2)).mean(0).float()


def _map_cosine(a: Tensor, b: Tensor) -> float:
    """a, b: [B, H, N, M] with one head count (or either with 1 head, broadcast) -> mean cosine."""
    H = max(a.shape[1], b.shape[1])
    fa = F.normalize(a.expand(-1, H, -1, -1).flatten(2).double(), dim=-1)
    fb = F.normalize(b.expand(-1, H, -1, -1).flatten(2).double(), dim=-1)
    return float((fa * fb).sum(-1).mean())


def layer_map_cosine(captures: list[LayerCapture]) -> Tensor:
    """[L, L] same-head map cosine between layers; layers with 1 map (Reuse) are compared with
    every head; pairs with different head counts otherwise use the head-mean map; NaN: no map."""
    L = len(captures)
    out = torch.full((L, L), float("nan"))
    for i, ci in enumerate(captures):
        for j in range(i, L):
            a, b = ci.maps, captures[j].maps
            if a is None or b is None or a.shape[0] != b.shape[0] or a.shape[2:] != b.shape[2:]:
                continue
            if a.shape[1] != b.shape[1] and 1 not in (a.shape[1], b.shape[1]):
                a, b = a.mean(1, keepdim=True), b.mean(1, keepdim=True)
            out[i, j] = out[j, i] = _map_cosine(a, b)
    return out


def layer_output_cka(captures: list[LayerCapture]) -> Tensor:
    """[L, L] linear CKA between layers' attention outputs (tokens as samples); NaN: no output."""
    L = len(captures)
    out = torch.full((L, L), float("nan"))
    flats = [c.output.reshape(-1, c.output.shape[-1]) if c.output is not None else None for c in captures]
    for i in range(L):
        for j in range(i, L):
            if flats[i] is not None and flats[j] is not None and flats[i].shape[0] == flats[j].shape[0]:
                out[i, j] = out[j, i] = linear_cka(flats[i], flats[j])
    return out
