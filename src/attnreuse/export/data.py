"""Real images for parity checks, calibration and int8 agreement, prepared exactly as
`attnreuse train` prepares them (`attnreuse.train.data`: the same digits / ImageFolder splits and
the same Resize -> ToTensor -> Normalize(model mean/std) evaluation transform)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["SPLITS", "digits_images", "load_images"]

SPLITS = ("train", "val", "test")


def load_images(
    source: str,
    split: str,
    *,
    img_size: int,
    in_chans: int = 3,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    limit: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The first `limit` images of `split` of `source` ("digits" or an ImageFolder directory) as
    (images [N, 3, img_size, img_size] float32 normalised, labels [N] int64)."""
    from attnreuse.train.data import build_transform, open_data

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if in_chans != 3:
        raise ValueError(f"images are RGB; the model must take in_chans=3, got {in_chans}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, got {limit!r}")
    dataset = getattr(open_data(source), split)
    transform = build_transform(img_size, tuple(mean), tuple(std), train=False)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise ValueError(f"the {split} split of {source!r} holds no images")
    pairs = [dataset[i] for i in range(n)]
    images = torch.stack([transform(img) for img, _ in pairs])
    return images, torch.tensor([label for _, label in pairs], dtype=torch.int64)


def digits_images(split: str, *, img_size: int, limit: int | None = None, **norm) -> tuple[Tensor, Tensor]:
    """`load_images("digits", split, ...)`: the built-in digits (train 1258 / val 270 / test 269)."""
    return load_images("digits", split, img_size=img_size, limit=limit, **norm)
