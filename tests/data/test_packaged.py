"""The packaged real image sets (data=digits, data=lfw_faces): fixed stratified splits, classes, few-shot sets."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from diffedit_lab.data import packaged
from diffedit_lab.data.packaged import PackagedDataModule, stratified_split, to_model_images
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate


def test_stratified_split_counts_by_hand():
    labels = np.array([0] * 10 + [1] * 20)
    s = stratified_split(labels, val_fraction=0.1, test_fraction=0.3, seed=0)
    # class 0: 3 test, 1 val, 6 train; class 1: 6 test, 2 val, 12 train
    assert [int((labels[s["test"]] == c).sum()) for c in (0, 1)] == [3, 6]
    assert [int((labels[s["val"]] == c).sum()) for c in (0, 1)] == [1, 2]
    assert [int((labels[s["train"]] == c).sum()) for c in (0, 1)] == [6, 12]
    assert sorted(s["train"] + s["val"] + s["test"]) == list(range(30))  # disjoint, complete
    assert s == stratified_split(labels, 0.1, 0.3, seed=0)
    assert s != stratified_split(labels, 0.1, 0.3, seed=1)


def test_to_model_images_range_and_channels():
    grey = np.zeros((2, 8, 8), np.float32)
    grey[1] = 1.0
    x = to_model_images(grey, (32, 32))
    assert x.shape == (2, 3, 32, 32)
    assert torch.equal(x[0], torch.full_like(x[0], -1.0)) and torch.allclose(x[1], torch.ones_like(x[1]))


def test_digits_config_splits_fixed_across_run_seeds(compose):
    a = instantiate(compose("data=digits", "seed=1", tiny=False).data)
    b = instantiate(compose("data=digits", "seed=2", tiny=False).data)
    assert a.describe()["train"] + a.describe()["val"] + a.describe()["test"] == 1797
    for split in ("train", "test"):
        assert a.dataset(split).names == b.dataset(split).names  # split_seed, not the run's seed
    item = a.dataset("test")[0]
    assert item["image"].shape == (3, 32, 32) and -1 <= float(item["image"].min()) and float(item["image"].max()) <= 1
    assert f"_c{item['label']}.png" in item["path"]
    assert a._loader_settings("train")["seed"] == 1  # the shuffling follows the run's seed


def test_classes_and_few_shot_train_set():
    dm = PackagedDataModule(name="digits", classes=[9], train_per_class=10)
    train, test = dm.dataset("train"), dm.dataset("test")
    assert len(train) == 10 and set(train.labels) == {9}
    assert set(test.labels) == {9} and len(test) == 54  # 30 % of the 180 nines
    full = PackagedDataModule(name="digits", classes=[9])
    assert train.names == full.dataset("train").names[:10]  # the first 10, not a draw
    source = PackagedDataModule(name="digits", classes=list(range(9)))
    assert 9 not in set(source.dataset("train").labels)


def test_lfw_faces_labels():
    dm = PackagedDataModule(name="lfw_faces")
    labels = dm.dataset("train").labels + dm.dataset("val").labels + dm.dataset("test").labels
    assert len(labels) == 200 and labels.count(1) == 100


@pytest.mark.parametrize(
    "kwargs, text",
    [
        ({"name": "mnist"}, "unknown packaged image set"),
        ({"classes": [10]}, "data.classes"),
        ({"classes": []}, "data.classes"),
        ({"train_per_class": 0}, "train_per_class"),
    ],
)
def test_bad_options_one_line(kwargs, text):
    with pytest.raises(UserError, match=text):
        PackagedDataModule(**kwargs)


def test_missing_scikit_learn_is_one_line(monkeypatch):
    packaged.load_packaged.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails as if not installed
    try:
        with pytest.raises(UserError, match=r"pip install 'diffedit_lab\[mini\]'"):
            PackagedDataModule(name="digits").preflight()
    finally:
        packaged.load_packaged.cache_clear()
