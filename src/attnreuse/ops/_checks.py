"""Input validation shared by every operator: clear errors that name the argument and the shapes."""

from __future__ import annotations

import math

from torch import Tensor


def check_tensor(name: str, x: object, rank: int | None = None) -> Tensor:
    """Require a floating-point tensor of the given rank with no empty dimension."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if rank is not None and x.dim() != rank:
        raise ValueError(f"{name} must have {rank} dimensions, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    return x


def check_same(names: tuple[str, ...], tensors: tuple[Tensor, ...]) -> None:
    """Require one dtype and one device across the tensors."""
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        got = ", ".join(f"{n}={t.dtype}" for n, t in zip(names, tensors))
        raise TypeError(f"{', '.join(names)} must share one dtype, got {got}")
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        got = ", ".join(f"{n}={t.device}" for n, t in zip(names, tensors))
        raise ValueError(f"{', '.join(names)} must be on one device, got {got}")


def check_qkv(q: object, k: object, v: object) -> tuple[int, int, int, int, int, int, int]:
    """Validate q: [B, Hq, N, Dk], k: [B, Hq, M, Dk], v: [B, Hv, M, Dv] with Hv % Hq == 0.

    Returns (B, Hq, Hv, N, M, Dk, Dv).
    """
    q = check_tensor("q", q, 4)
    k = check_tensor("k", k, 4)
    v = check_tensor("v", v, 4)
    check_same(("q", "k", "v"), (q, k, v))
    B, Hq, N, Dk = q.shape
    if k.shape[0] != B or k.shape[1] != Hq or k.shape[3] != Dk:
        raise ValueError(
            f"k must be [B, Hq, M, Dk] = [{B}, {Hq}, M, {Dk}] to match q {tuple(q.shape)}, "
            f"got {tuple(k.shape)}"
        )
    M = k.shape[2]
    Bv, Hv, Mv, Dv = v.shape
    if Bv != B or Mv != M:
        raise ValueError(
            f"v must be [B, Hv, M, Dv] = [{B}, Hv, {M}, Dv] to match k {tuple(k.shape)}, "
            f"got {tuple(v.shape)}"
        )
    if Hv % Hq != 0:
        raise ValueError(
            f"v heads must be a multiple of q/k heads (Hv % Hq == 0), got Hv={Hv}, Hq={Hq}"
        )
    return B, Hq, Hv, N, M, Dk, Dv


def check_bias(bias: object, ref: Tensor, shape: tuple[int, int, int, int]) -> Tensor:
    """Require a bias of q's dtype that broadcasts to `shape` = [B, Hq, N, M]; return it 4-D."""
    if not isinstance(bias, Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
    if not bias.is_floating_point():
        raise TypeError(f"bias must be a floating-point tensor, got dtype {bias.dtype}")
    check_same(("q", "bias"), (ref, bias))
    ok = bias.dim() <= 4 and all(
        b in (1, s) for b, s in zip(reversed(bias.shape), reversed(shape))
    )
    if not ok:
        raise ValueError(
            f"bias must broadcast to [B, Hq, N, M] = {list(shape)}, got shape {tuple(bias.shape)}"
        )
    return bias.reshape((1,) * (4 - bias.dim()) + tuple(bias.shape))


def check_scale(scale: object, default: float) -> float:
    """A finite float, or `default` for None."""
    if scale is None:
        return float(default)  # a traced shape makes the default a 0-d tensor
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale!r}")
    return float(scale)


def check_eps(eps: object) -> float:
    """A positive finite float (a denominator's floor)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < math.inf:
        raise ValueError(f"eps must be a positive finite float, got {eps!r}")
    return float(eps)


def group_values(v: Tensor, hq: int) -> Tensor:
    """[B, Hv, M, Dv] -> [B, Hq, M, r * Dv]: the r = Hv // Hq value heads that share a map,
    side by side along channels (value head j uses map j // r). A view when the layout allows."""
    B, Hv, M, Dv = v.shape
    r = Hv // hq
    if r == 1:
        return v
    return v.reshape(B, hq, r, M, Dv).transpose(2, 3).reshape(B, hq, M, r * Dv)


def ungroup_values(out: Tensor, hv: int) -> Tensor:
    """Inverse of `group_values` on outputs: [B, Hq, N, r * Dv] -> [B, Hv, N, Dv]."""
    B, Hq, N, RD = out.shape
    r = hv // Hq
    if r == 1:
        return out
    return out.reshape(B, Hq, N, r, RD // r).transpose(2, 3).reshape(B, hv, N, RD // r)

