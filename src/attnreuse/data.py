"""Image data for every tool: the built-in digits set, an ImageFolder directory, or a local torchvision dataset.

Every source yields PIL images and integer labels, split into train/val/test, and goes through one
transform pipeline: Resize((S, S), bilinear) -> optional timm RandAugment (train only) -> ToTensor
-> Normalize(model mean/std), so a sample is x: [3, S, S] float32, y: int.

Splits (fixed, independent of the run's --seed so every run is scored on the same images):
- digits: scikit-learn's `load_digits` (1797 8x8 grey images, 10 classes, offline), stratified
  70/15/15 train/val/test (1258/270/269) with `SPLIT_SEED`; pixel values 0..16 are mapped to 0..255 and the
  images upscaled to S x S when loaded.
- ImageFolder PATH: PATH/train, PATH/val (and PATH/test if present: else val doubles as test);
  a flat folder of class sub-folders is split stratified 70/15/15 with `SPLIT_SEED`.
- torchvision:NAME:ROOT (e.g. torchvision:CIFAR10:/data, download=False): train = train=True;
  val and test = the two stratified halves of train=False.

`load_images` / `digits_images` return the first images of a split as one normalised tensor
(parity checks, int8 calibration and agreement in export and bench), prepared exactly as `train`
prepares its evaluation images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler

__all__ = [
    "SPLITS", "DataSplits", "DigitsDataset", "build_transform", "digits_images", "load_images", "make_eval_loader",
    "make_train_loader", "open_data",
]  # fmt: skip

SPLIT_SEED = 0
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
SPLITS = ("train", "val", "test")


class DigitsDataset(Dataset):
    """scikit-learn's digits as RGB PIL images: images: [N, 8, 8] uint8 (0..255), labels: [N]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        if images.ndim != 3 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images must be [N, H, W] with N = len(labels) = {labels.shape[0]}, got {images.shape}"
            )
        self.images, self.labels, self.transform = images, labels, transform
        self.targets = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.images[i], mode="L").convert("RGB")
        return (self.transform(img) if self.transform else img), int(self.labels[i])


class _Transformed(Dataset):
    """A view of `base` (a dataset or Subset yielding PIL images) with its own transform."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        img, label = self.base[i]
        return self.transform(img), label


@dataclass
class DataSplits:
    """Untransformed train/val/test datasets (PIL images, int labels) and the class count."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    description: str

    def transformed(self, train_tf, eval_tf) -> DataSplits:
        return DataSplits(
            _Transformed(self.train, train_tf),
            _Transformed(self.val, eval_tf),
            _Transformed(self.test, eval_tf),
            self.num_classes,
            self.description,
        )


def _stratified_split(labels: np.ndarray, fractions: tuple[float, ...]) -> list[np.ndarray]:
    """Index arrays, one per fraction, each class divided in the same proportions (SPLIT_SEED)."""
    rng = np.random.RandomState(SPLIT_SEED)
    parts: list[list[int]] = [[] for _ in fractions]
    bounds = np.cumsum(fractions)[:-1]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = np.floor(bounds * len(idx) + 0.5).astype(int)  # halves round up, not to even
        for part, chunk in zip(parts, np.split(idx, cuts)):
            part.extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _digits() -> DataSplits:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    labels = d.target.astype(np.int64)
    tr, va, te = _stratified_split(labels, SPLIT_FRACTIONS)
    full = DigitsDataset(images, labels)
    return DataSplits(
        Subset(full, tr), Subset(full, va), Subset(full, te), 10,
        f"digits ({len(tr)}/{len(va)}/{len(te)} train/val/test, split seed {SPLIT_SEED})",
    )


def _read_image(path: str):
    """ImageFolder's loader: the image file `path` as an RGB PIL image. A file PIL cannot read (cut
    short, or not an image behind an image extension) is a ValueError naming it, not PIL's
    traceback in the middle of an epoch."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError is an OSError; decoders raise all three
        why = "not an image PIL can identify" if isinstance(err, UnidentifiedImageError) else str(err)
        raise ValueError(f"image {path} cannot be read ({why}); remove or replace it") from None


def _folder(root: Path):
    """torchvision's ImageFolder over `root` (class sub-folders of images), its errors naming `root`."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(root, loader=_read_image)
    except FileNotFoundError as err:  # no class folder, or no image file in one
        raise FileNotFoundError(f"data directory {root}: {err}") from None


def _image_folder(root: Path) -> DataSplits:
    if (root / "train").is_dir():
        if not (root / "val").is_dir():
            raise FileNotFoundError(f"data directory {root} has train/ but no val/ folder")
        train, val = _folder(root / "train"), _folder(root / "val")
        test = _folder(root / "test") if (root / "test").is_dir() else val
        if train.classes != val.classes or train.classes != test.classes:
            raise ValueError(f"train/val/test folders under {root} must hold the same class folders")
        return DataSplits(train, val, test, len(train.classes), f"ImageFolder {root}")
    full = _folder(root)
    tr, va, te = _stratified_split(np.asarray(full.targets), SPLIT_FRACTIONS)
    if min(len(tr), len(va), len(te)) == 0:
        raise ValueError(f"ImageFolder {root} has too few images ({len(full)}) for a 70/15/15 split")
    return DataSplits(
        Subset(full, tr), Subset(full, va), Subset(full, te), len(full.classes),
        f"ImageFolder {root} ({len(tr)}/{len(va)}/{len(te)} split seed {SPLIT_SEED})",
    )


def _torchvision(spec: str) -> DataSplits:
    import torchvision.datasets as tvd

    parts = spec.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise ValueError(f"data must look like 'torchvision:NAME:ROOT' (e.g. torchvision:CIFAR10:/data), got {spec!r}")
    _, name, root = parts
    cls = getattr(tvd, name, None)
    if cls is None:
        raise ValueError(f"torchvision.datasets has no dataset {name!r}")
    try:
        train = cls(root, train=True, download=False)
        rest = cls(root, train=False, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise FileNotFoundError(
            f"--data {spec}: torchvision {name} is not in {root} ({str(err).split('.')[0]}); "
            f"download it there first, e.g. python -c \"import torchvision; torchvision.datasets.{name}({root!r}, download=True)\""
        ) from None
    va, te = _stratified_split(np.asarray(rest.targets), (0.5, 0.5))
    return DataSplits(train, Subset(rest, va), Subset(rest, te), len(train.classes), f"torchvision {name} at {root}")


def open_data(spec: str) -> DataSplits:
    """`spec`: "digits", an ImageFolder directory, or "torchvision:NAME:ROOT" (see module docstring)."""
    if spec == "digits":
        return _digits()
    if spec.startswith("torchvision:"):
        return _torchvision(spec)
    root = Path(spec)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data must be 'digits', an ImageFolder directory or 'torchvision:NAME:ROOT'; {spec!r} is none of these"
        )
    return _image_folder(root)


def build_transform(img_size: int, mean, std, *, train: bool, rand_augment: str | None = None):
    """PIL image -> [3, img_size, img_size] float32, normalised; RandAugment (timm) only when training."""
    from torchvision import transforms as T

    steps = [T.Resize((img_size, img_size), interpolation=T.InterpolationMode.BILINEAR)]
    if train and rand_augment:
        from timm.data import rand_augment_transform

        fill = tuple(int(round(255 * m)) for m in mean)
        steps.append(rand_augment_transform(rand_augment, {"img_mean": fill}))
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def make_train_loader(
    dataset: Dataset, batch_size: int, *, rank: int, world: int, seed: int, num_workers: int = 0
) -> tuple[DataLoader, DistributedSampler]:
    """Shuffled loader of this rank's share of each GLOBAL batch of `batch_size`.

    One DistributedSampler (also with world == 1) fixes the order from (seed, epoch), so a resumed
    run replays it after `sampler.set_epoch(epoch)`; rank r takes every world-th sample, so the union
    of the ranks' step-s batches is the single-process step-s batch.
    """
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world}")
    per_rank = batch_size // world
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)
    if len(sampler) < per_rank:
        raise ValueError(
            f"batch_size {batch_size} is larger than the training set ({len(dataset)} images); lower --batch-size"
        )
    loader = DataLoader(
        dataset, batch_size=per_rank, sampler=sampler, drop_last=True, num_workers=num_workers,
        persistent_workers=False,
    )
    return loader, sampler


def make_eval_loader(dataset: Dataset, batch_size: int, *, rank: int, world: int, num_workers: int = 0) -> DataLoader:
    """In-order loader of samples rank, rank + world, ... (no padding: counts summed over ranks are exact)."""
    part = Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
    return DataLoader(part, batch_size=max(1, batch_size // world), shuffle=False, num_workers=num_workers)


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
