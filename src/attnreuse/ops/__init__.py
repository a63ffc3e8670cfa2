"""Attention operators: plain functions on tensors, each beside its literal reference.

Every operator is a leaf of a `torch.fx` graph (`torch.fx.wrap`): a symbolically traced model
(timm's feature extraction) records one call per operator and runs it, with its checks, on the
real tensors; the operators branch on shapes and backends, which a Proxy cannot decide.
"""

import torch.fx

from attnreuse.ops import reference
from attnreuse.ops._native import available as native_available
from attnreuse.ops._native import reason as native_reason
from attnreuse.ops._workspace import release_map_workspace, workspace_bytes
from attnreuse.ops.backend import BACKENDS, exporting, get_backend, is_exporting, set_backend, use_backend
from attnreuse.ops.linear import linear_attention, taylor_attention
from attnreuse.ops.softmax import apply_map, attention_map, auto_tile, softmax_attention
from attnreuse.ops.sparse import fake_quant, sparse_attention, taylor_residual_attention

for _name in (
    "apply_map", "attention_map", "linear_attention", "softmax_attention", "sparse_attention",
    "taylor_attention", "taylor_residual_attention",
):
    torch.fx.wrap(_name)
del _name

__all__ = [
    "BACKENDS",
    "apply_map",
    "attention_map",
    "auto_tile",
    "exporting",
    "fake_quant",
    "get_backend",
    "is_exporting",
    "linear_attention",
    "native_available",
    "native_reason",
    "reference",
    "release_map_workspace",
    "set_backend",
    "softmax_attention",
    "sparse_attention",
    "taylor_attention",
    "taylor_residual_attention",
    "use_backend",
    "workspace_bytes",
]
