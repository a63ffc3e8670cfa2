import numpy as np
import pytest
import torch

from attnreuse.data import build_transform, make_eval_loader, make_train_loader, open_data


def _labels(ds):
    return [ds[i][1] for i in range(len(ds))]


def test_digits_split_is_fixed_stratified_and_disjoint():
    a, b = open_data("digits"), open_data("digits")
    sizes = (len(a.train), len(a.val), len(a.test))
    assert sum(sizes) == 1797 and sizes == (1258, 270, 269)
    assert a.num_classes == 10
    idx = [set(s.indices) for s in (a.train, a.val, a.test)]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and not (idx[1] & idx[2])
    assert list(a.test.indices) == list(b.test.indices)
    counts = np.bincount(_labels(a.test), minlength=10)
    assert counts.min() >= 26 and counts.max() <= 28


def test_digits_transform_upscales_to_normalised_rgb():
    splits = open_data("digits")
    tf = build_transform(24, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), train=False)
    x, y = splits.transformed(tf, tf).train[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.1
    assert isinstance(y, int)


def test_rand_augment_applies_only_to_training():
    tf_train = build_transform(16, (0.5,) * 3, (0.5,) * 3, train=True, rand_augment="rand-m9-n2")
    tf_eval = build_transform(16, (0.5,) * 3, (0.5,) * 3, train=False, rand_augment="rand-m9-n2")
    assert len(tf_train.transforms) == len(tf_eval.transforms) + 1


def test_image_folder_of_pngs(tmp_path):
    from PIL import Image

    rng = np.random.RandomState(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(10):
            Image.fromarray(rng.randint(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    splits = open_data(str(tmp_path))
    assert splits.num_classes == 2 and (len(splits.train), len(splits.val), len(splits.test)) == (14, 4, 2)
    tf = build_transform(8, (0.5,) * 3, (0.5,) * 3, train=False)
    x, y = splits.transformed(tf, tf).val[0]
    assert x.shape == (3, 8, 8) and y in (0, 1)


def test_bad_data_spec_names_the_value(tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        open_data(str(tmp_path / "no_such_dir"))
    with pytest.raises(ValueError, match="torchvision:NAME:ROOT"):
        open_data("torchvision:CIFAR10")
    with pytest.raises(ValueError, match="no dataset 'NotADataset'"):
        open_data(f"torchvision:NotADataset:{tmp_path}")


def test_ranks_split_each_global_batch():
    data = list(range(40))
    full, s = make_train_loader(data, 8, rank=0, world=1, seed=3)
    s.set_epoch(1)
    parts = []
    for r in range(2):
        loader, sampler = make_train_loader(data, 8, rank=r, world=2, seed=3)
        sampler.set_epoch(1)
        parts.append(next(iter(loader)))
    assert sorted(torch.cat(parts).tolist()) == sorted(next(iter(full)).tolist())
    with pytest.raises(ValueError, match="batch_size 7 must be divisible by the number of processes 2"):
        make_train_loader(data, 7, rank=0, world=2, seed=0)
    evals = [torch.cat(list(make_eval_loader(data, 4, rank=r, world=2))).tolist() for r in range(2)]
    assert sorted(evals[0] + evals[1]) == data


class _FakeVisionSet:
    """Stands in for a torchvision dataset class: (root, train=, download=), .classes, .targets."""

    def __init__(self, root, train=True, download=False):
        assert download is False
        n = 30 if train else 20
        self.classes = ["a", "b"]
        self.targets = [i % 2 for i in range(n)]
        self.train = train

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        from PIL import Image

        return Image.new("RGB", (6, 6), color=(i, 0, 0)), self.targets[i]


def test_local_torchvision_dataset(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "FakeSet", _FakeVisionSet, raising=False)
    splits = open_data(f"torchvision:FakeSet:{tmp_path}")
    assert splits.num_classes == 2 and splits.train.train is True
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 10, 10)
    assert not set(splits.val.indices) & set(splits.test.indices)
