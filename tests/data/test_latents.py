"""LatentCodesDataModule: seed-sampled codes (disjoint, deterministic splits) and W+ code files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffedit_lab.data.latents import LatentCodesDataModule, load_codes
from diffedit_lab.utils.errors import UserError


def _seeds(ds) -> list[int]:
    return [ds[i]["seed"] for i in range(len(ds))]


def _save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_sampled_mode_seeds_are_disjoint_and_deterministic():
    dm = LatentCodesDataModule(num_train=5, num_test=3, seed=7)
    assert dm.sampled
    dm.setup("fit")
    # train seeds seed·10⁶ + i, test seeds seed·10⁶ + 900000 + i
    assert _seeds(dm.dataset("train")) == [7_000_000, 7_000_001, 7_000_002, 7_000_003, 7_000_004]
    assert _seeds(dm.dataset("test")) == [7_900_000, 7_900_001, 7_900_002]
    assert [dm.dataset("test")[i]["index"] for i in range(3)] == [0, 1, 2]
    again = LatentCodesDataModule(num_train=5, num_test=3, seed=7)
    again.setup("test")
    assert _seeds(again.dataset("train")) == _seeds(dm.dataset("train")) and _seeds(again.dataset("test")) == _seeds(
        dm.dataset("test")
    )
    other = LatentCodesDataModule(num_train=5, num_test=3, seed=8)
    other.setup()
    assert not set(_seeds(other.dataset("train"))) & set(_seeds(dm.dataset("train")))
    # default sizes: 100000 train and 100 test seeds never overlap
    big = LatentCodesDataModule(seed=0)
    big.setup()
    train, test = big.dataset("train"), big.dataset("test")
    assert len(train) == 100_000 and len(test) == 100
    assert train[len(train) - 1]["seed"] < test[0]["seed"]


def test_sampled_train_loader_is_reproducible():
    def first_batches(seed):
        dm = LatentCodesDataModule(num_train=20, num_test=2, batch_size=4, seed=seed)
        return [b["seed"].tolist() for b in dm.train_dataloader()]

    a = first_batches(1)
    assert a == first_batches(1)
    assert len(a) == 5 and sorted(sum(a, [])) == list(range(1_000_000, 1_000_020))
    assert sum(a, []) != list(range(1_000_000, 1_000_020)), "train batches are shuffled"


def test_file_mode_first_codes_are_the_test_split(tmp_path):
    codes = torch.arange(5 * 4 * 3, dtype=torch.float64).view(5, 4, 3)
    dm = LatentCodesDataModule(codes=str(_save(codes, tmp_path / "w.pt")), test_size=2, eval_batch_size=8)
    dm.setup("fit")
    assert not dm.sampled and len(dm.dataset("test")) == 2 and len(dm.dataset("train")) == 3
    for i in range(2):
        assert torch.equal(dm.dataset("test")[i]["w"], codes[i].float()) and dm.dataset("test")[i]["index"] == i
    for i in range(3):
        assert torch.equal(dm.dataset("train")[i]["w"], codes[2 + i].float())
    batch = next(iter(dm.test_dataloader()))
    assert batch["w"].dtype == torch.float32 and torch.equal(batch["w"], codes[:2].float())


def test_test_size_is_clamped_to_leave_one_training_code(tmp_path):
    codes = torch.randn(3, 2, 4)
    dm = LatentCodesDataModule(codes=str(_save(codes, tmp_path / "w.pt")), test_size=100)
    dm.setup()
    assert len(dm.dataset("test")) == 2 and torch.equal(dm.dataset("train")[0]["w"], codes[2])


def test_separate_test_codes_file(tmp_path):
    train, test = torch.randn(4, 2, 3), torch.randn(2, 2, 3)
    dm = LatentCodesDataModule(
        codes=str(_save(train, tmp_path / "train.pt")),
        test_codes=str(_save(test, tmp_path / "test.pt")),
        test_size=1,
    )
    dm.setup()
    assert len(dm.dataset("train")) == 4 and len(dm.dataset("test")) == 2
    assert torch.equal(dm.dataset("train")[0]["w"], train[0]) and torch.equal(dm.dataset("test")[1]["w"], test[1])


@pytest.mark.parametrize("key", ["latents", "codes", "w", "wplus", "anything"])
def test_dict_files_load(tmp_path, key):
    codes = torch.randn(3, 2, 4)
    obj = {key: codes, "meta": "e4e"} if key != "anything" else {key: codes}
    torch.testing.assert_close(load_codes(_save(obj, tmp_path / "w.pt")), codes, rtol=0, atol=0)


@pytest.mark.parametrize(
    "obj",
    [torch.randn(5, 12), torch.randn(2, 3, 4, 5), {"a": torch.randn(2, 2, 2), "b": torch.randn(2, 2, 2)}],
)
def test_wrong_layout_is_a_user_error(tmp_path, obj):
    dm = LatentCodesDataModule(codes=str(_save(obj, tmp_path / "w.pt")))
    with pytest.raises(UserError, match="expected an \\(N, layers, dim\\) tensor"):
        dm.setup()


def test_missing_file_is_a_user_error(tmp_path):
    dm = LatentCodesDataModule(codes=str(tmp_path / "nope.pt"))
    with pytest.raises(UserError, match="not found"):
        dm.setup()


def test_a_single_code_cannot_be_split(tmp_path):
    dm = LatentCodesDataModule(codes=str(_save(torch.randn(1, 18, 512), tmp_path / "one.pt")))
    with pytest.raises(UserError, match="at least 2"):
        dm.setup()


def test_interface_matches_the_image_datamodules():
    dm = LatentCodesDataModule(num_train=6, num_test=3, batch_size=2, eval_batch_size=2, seed=1)
    assert dm.splits == ("train", "test")
    with pytest.raises(UserError, match="no 'val' split \\(it serves: train, test\\)"):
        dm.dataset("val")
    with pytest.raises(UserError, match="unknown data split 'valid'"):
        dm.dataset("valid")
    assert [b["seed"].tolist() for b in dm.predict_dataloader()] == [[1_900_000, 1_900_001], [1_900_002]]
    assert [b["seed"].tolist() for b in dm.test_dataloader()] == [[1_900_000, 1_900_001], [1_900_002]]
    with pytest.deprecated_call():
        assert dm.train_set is dm.dataset("train")


def test_train_loader_resumes_mid_epoch():
    def make():
        return LatentCodesDataModule(num_train=7, num_test=1, batch_size=2, seed=3).train_dataloader()

    full = [b["seed"].tolist() for _, b in zip(range(6), make_passes(make()))]  # 3 batches an epoch
    first = make()
    it = iter(first)
    head = [next(it)["seed"].tolist() for _ in range(2)]
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    rest = [b["seed"].tolist() for _, b in zip(range(4), make_passes(resumed))]
    assert head + rest == full


def make_passes(dl):
    """Batches of consecutive passes over ``dl`` (each pass is a new epoch)."""
    while True:
        yield from dl
