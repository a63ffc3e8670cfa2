"""Real images for parity checks, calibration and int8 agreement: scikit-learn's digits or an
ImageFolder, resized and normalised the way the model's `pretrained_cfg` asks.

Digits (1,797 grey 8 x 8 images, values 0..16) are split 80/20 with a fixed seed, scaled to
[0, 1], repeated over `in_chans` channels and resized bilinearly to the model's input size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["DIGITS_SPLITS", "digits_images", "folder_images", "load_images"]

DIGITS_SPLITS = ("train", "test")
_DIGITS_TEST_FRACTION = 0.2
_DIGITS_SEED = 0


def _normalise(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """x: [N, C, H, W] in [0, 1] -> (x - mean) / std per channel."""
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


def digits_images(
    split: str,
    *,
    img_size: int,
    in_chans: int = 3,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    limit: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The digits `split` ("train" 1,437 images or "test" 360) as (images [N, in_chans, img_size,
    img_size] float32 normalised, labels [N] int64); `limit` keeps the first `limit` images."""
    if split not in DIGITS_SPLITS:
        raise ValueError(f"split must be one of {DIGITS_SPLITS}, got {split!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    idx_train, idx_test = train_test_split(
        range(len(data.target)),
        test_size=_DIGITS_TEST_FRACTION,
        random_state=_DIGITS_SEED,
        stratify=data.target,
    )
    idx = list(idx_train if split == "train" else idx_test)[:limit]
    x = torch.tensor(data.images[idx], dtype=torch.float32).div_(16.0).unsqueeze(1)
    x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
    x = _normalise(x.expand(-1, in_chans, -1, -1), mean[:in_chans], std[:in_chans]).contiguous()
    return x, torch.tensor(data.target[idx], dtype=torch.int64)


def folder_images(
    root: str | Path,
    *,
    img_size: int,
    in_chans: int = 3,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    limit: int | None = None,
) -> tuple[Tensor, Tensor]:
    """An ImageFolder (one sub-directory per class) resized to img_size and centre-cropped."""
    if not Path(root).is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} is not a directory")
    from torchvision import datasets, transforms

    tf = transforms.Compose(
        [
            transforms.Resize(img_size),
            transforms.CenterCrop(img_size),
            transforms.Grayscale(1) if in_chans == 1 else transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.ToTensor(),
            transforms.Normalize(mean[:in_chans], std[:in_chans]),
        ]
    )
    ds = datasets.ImageFolder(str(root), transform=tf)
    n = len(ds) if limit is None else min(limit, len(ds))
    if n == 0:
        raise ValueError(f"image folder {str(root)!r} holds no images")
    pairs = [ds[i] for i in range(n)]
    return torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs], dtype=torch.int64)


def load_images(
    source: str, split: str, *, img_size: int, in_chans: int, mean, std, limit: int | None = None
) -> tuple[Tensor, Tensor]:
    """`source` "digits" (the given split) or an ImageFolder path (split ignored)."""
    kwargs = dict(img_size=img_size, in_chans=in_chans, mean=tuple(mean), std=tuple(std), limit=limit)
    if source == "digits":
        return digits_images(split, **kwargs)
    return folder_images(source, **kwargs)
