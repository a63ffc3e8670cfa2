"""ONNX export of the operators inside `ops.exporting()`, as `attnreuse.deploy` and `attnreuse.hf.export`
do it (TorchScript-based exporter, a dynamic sequence length): the file computes what eager computes
at lengths other than the one exported. The eager chunked paths (`CHUNK_BYTES`, made tiny here so
they would loop) write with `out=`, which this exporter cannot translate, and bake their Python loop
over chunks into the graph; inside `exporting()` no operator may take them."""

import contextlib
import io
import warnings

import pytest
import torch

import attnreuse.ops.linear as linear_mod
from attnreuse import ops

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

OPS = {
    "taylor-tokens": lambda q, k, v: ops.taylor_attention(q, k, v),
    "taylor-features": lambda q, k, v: ops.taylor_attention(q, k, v, center="features"),
    "taylor-none": lambda q, k, v: ops.taylor_attention(q, k + 2, v, center=None),
    "linear-elu": lambda q, k, v: ops.linear_attention(q, k, v, feature_map="elu"),
    "softmax-reuse": lambda q, k, v: ops.softmax_attention(q, k, v),
}


class _Op(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, q, k, v):
        return self.fn(q, k, v)


def _inputs(n: int):
    return torch.randn(1, 2, n, 4), torch.randn(1, 2, n, 4), torch.randn(1, 4, n, 3)  # Hv = 2 Hq


@pytest.mark.parametrize("name", list(OPS))
def test_onnx_file_matches_eager_at_other_lengths(name, monkeypatch, tmp_path):
    monkeypatch.setattr(linear_mod, "CHUNK_BYTES", 128)  # a few rows per chunk at these sizes
    fn, path = OPS[name], tmp_path / "op.onnx"
    axes = {n: {2: "tokens"} for n in ("q", "k", "v", "out")}
    with torch.no_grad(), ops.exporting(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_Op(fn), _inputs(12), str(path), input_names=["q", "k", "v"], output_names=["out"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (12, 5, 29):
        q, k, v = _inputs(n)
        got = torch.from_numpy(session.run(None, {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()})[0])
        torch.testing.assert_close(got, fn(q, k, v), rtol=1e-4, atol=1e-5, msg=lambda m: f"{name}, N={n}: {m}")
