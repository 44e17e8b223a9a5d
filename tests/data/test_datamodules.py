"""ImageDataModule and friends on tiny folders and LMDBs built in each test."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from diffedit_lab.data.datamodule import ImageDataModule
from diffedit_lab.data.samples import SampleImagesDataModule
from diffedit_lab.data.synthetic import SyntheticDataModule
from diffedit_lab.utils.config import CONF_DIR as CONF
from diffedit_lab.utils.errors import UserError

CONF_DIR = CONF / "data"
# The image configs (other files in conf/data, e.g. W+ code files, are tested by their own modules).
IMAGE_CONFIGS = (
    *("celebahq", "ffhq", "afhq_cat", "afhq_dog", "lsun_car", "lsun_church", "metfaces", "aahq"),
    *("samples", "synthetic"),
)


def write_image(path: Path, size=(12, 10), seed: int = 0, mode: str = "RGB", fmt: str | None = None) -> Path:
    """A random image (W, H) = size in the given mode; distinct seeds give distinct pixels."""
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "RGB":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    elif mode == "RGBA":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8))
    elif mode == "L":
        img = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
    elif mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode in ("P", "CMYK"):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    else:
        raise ValueError(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_dm(root, **kwargs) -> ImageDataModule:
    kwargs.setdefault("resolution", 8)
    return ImageDataModule(root=root, **kwargs)


def paths_of(dm: ImageDataModule, split: str) -> list[str]:
    ds = dm.dataset(split)
    return [ds[i]["path"] for i in range(len(ds))]


def test_folder_layout_with_split_subfolders(tmp_path):
    for i in range(3):
        write_image(tmp_path / "train" / f"a{i}.png", seed=i)
    for i in range(2):
        write_image(tmp_path / "test" / "sub" / f"b{i}.jpg", seed=10 + i)
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    dm = make_dm(tmp_path, batch_size=2)
    dm.setup("fit")
    assert paths_of(dm, "train") == ["train/a0.png", "train/a1.png", "train/a2.png"]
    assert paths_of(dm, "test") == ["test/sub/b0.jpg", "test/sub/b1.jpg"]
    assert paths_of(dm, "val") == paths_of(dm, "test")  # no val/ folder: falls back to test/
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 8, 8) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert len(dm.train_dataloader()) == 1  # 3 images, batch 2, drop_last
    assert [len(b["path"]) for b in dm.predict_dataloader()] == [2]
    assert dm.describe() == {"root": str(tmp_path), "resolution": [8, 8], "train": 3, "val": 2, "test": 2,
                             "skipped": 0}  # fmt: skip


def test_flat_folder_serves_every_split_and_small_train_keeps_last_batch(tmp_path):
    for i in range(3):
        write_image(tmp_path / f"{i}.png", seed=i)
    dm = make_dm(tmp_path, batch_size=8)
    assert paths_of(dm, "train") == paths_of(dm, "val") == paths_of(dm, "test") == ["0.png", "1.png", "2.png"]
    assert len(dm.train_dataloader()) == 1  # fewer images than a batch: no drop_last


def test_ratio_split_is_deterministic_and_disjoint(tmp_path):
    for i in range(20):
        write_image(tmp_path / f"{i:02d}.png", seed=i)
    splits = []
    for seed in (0, 0, 1):
        dm = make_dm(tmp_path, split_mode="ratio", val_fraction=0.2, test_fraction=0.1, seed=seed)
        splits.append({s: paths_of(dm, s) for s in ("train", "val", "test")})
    a, b, c = splits
    assert a == b and a != c
    assert [len(a[s]) for s in ("train", "val", "test")] == [14, 4, 2]
    sets = [set(a[s]) for s in ("train", "val", "test")]
    assert set.union(*sets) == {f"{i:02d}.png" for i in range(20)}
    assert sum(len(s) for s in sets) == 20


def test_list_split_and_missing_train_list_takes_the_rest(tmp_path):
    for i in range(5):
        write_image(tmp_path / "img" / f"{i}.png", seed=i)
    (tmp_path / "val.txt").write_text("# validation\nimg/1.png\n\n./img/3.png\n")
    (tmp_path / "test.txt").write_text("img/4.png\n")
    dm = make_dm(tmp_path, split_mode="list", val_list="val.txt", test_list=str(tmp_path / "test.txt"))
    assert paths_of(dm, "val") == ["img/1.png", "img/3.png"]
    assert paths_of(dm, "test") == ["img/4.png"]
    assert paths_of(dm, "train") == ["img/0.png", "img/2.png"]
    with pytest.raises(UserError, match="train_list"):
        make_dm(tmp_path, split_mode="list", train_list="nope.txt").setup()


def test_corrupt_file_is_skipped_counted_and_logged(tmp_path, caplog):
    write_image(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(np.random.default_rng(0).bytes(500))
    (tmp_path / "empty.jpg").write_bytes(b"")
    dm = make_dm(tmp_path)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert dm.num_skipped == 2
    assert paths_of(dm, "train") == ["good.png"]
    lines = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert lines == ["skipped 2 unreadable files (e.g. bad.png, empty.jpg)"]
    assert dm.describe()["skipped"] == 2


def test_truncated_file_needs_full_verify_or_is_replaced_at_load_time(tmp_path, caplog):
    for i in range(2):
        write_image(tmp_path / f"{i}.png", size=(64, 64), seed=i)
    data = (tmp_path / "0.png").read_bytes()
    (tmp_path / "0.png").write_bytes(data[: len(data) // 2])
    full = make_dm(tmp_path, verify="full")
    assert paths_of(full, "train") == ["1.png"] and full.num_skipped == 1
    header = make_dm(tmp_path, verify="header")
    assert header.num_skipped == 0
    with caplog.at_level(logging.WARNING):
        assert header.dataset("train")[0]["path"] == "1.png"  # 0.png fails to decode: next image instead
    assert any("0.png" in r.getMessage() for r in caplog.records)


def test_only_corrupt_files_raise_user_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(UserError, match="could be read"):
        make_dm(tmp_path, layout_hint="HINT").setup()


@pytest.mark.parametrize("mode", ["L", "RGBA", "I;16", "P", "CMYK"])
def test_any_mode_becomes_three_channels(tmp_path, mode):
    write_image(tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"), size=(9, 9), mode=mode)
    image = make_dm(tmp_path, resolution=9).dataset("train")[0]["image"]
    assert image.shape == (3, 9, 9)
    assert image.std() > 0.1  # 16-bit is rescaled, not clipped to white


def test_sixteen_bit_values_are_rescaled(tmp_path):
    arr = np.full((4, 4), 32768, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "mid.png")
    image = make_dm(tmp_path, resolution=4).dataset("train")[0]["image"]
    assert torch.allclose(image, torch.full_like(image, 0.0), atol=0.01)


def test_alpha_is_composited_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    image = make_dm(tmp_path, resolution=4).dataset("train")[0]["image"]
    assert torch.all(image == 1.0)


def test_non_square_image_is_center_cropped(tmp_path):
    arr = np.zeros((10, 30, 3), dtype=np.uint8)
    arr[:, 10:20] = 255  # white centre third, black sides
    Image.fromarray(arr).save(tmp_path / "wide.png")
    image = make_dm(tmp_path, resolution=10).dataset("train")[0]["image"]
    assert image.shape == (3, 10, 10)
    assert image[:, :, 2:8].min() > 0.9  # only the white centre remains
    stretched = make_dm(tmp_path, resolution=[5, 15], resize_mode="resize").dataset("train")[0]["image"]
    assert stretched.shape == (3, 5, 15) and stretched[:, :, 0].max() < -0.9


def test_hflip_only_on_train(tmp_path):
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[:, :4] = 255
    Image.fromarray(arr).save(tmp_path / "half.png")
    dm = make_dm(tmp_path, hflip=True)
    torch.manual_seed(0)
    train_left = {float(dm.dataset("train")[0]["image"][0, 0, 0]) for _ in range(30)}
    val_left = {float(dm.dataset(s)[0]["image"][0, 0, 0]) for s in ("val", "test") for _ in range(15)}
    assert train_left == {1.0, -1.0}
    assert val_left == {1.0}


def test_include_and_exclude_lists(tmp_path):
    for name in ("a", "b", "c", "d"):
        write_image(tmp_path / "faces" / f"{name}.png")
    (tmp_path / "glasses.txt").write_text("b\nfaces/c.png\n")
    (tmp_path / "subset.txt").write_text("a.png\nc\nd\n")
    assert paths_of(make_dm(tmp_path, exclude_list="glasses.txt"), "train") == ["faces/a.png", "faces/d.png"]
    assert paths_of(make_dm(tmp_path, include_list="subset.txt"), "train") == [
        "faces/a.png",
        "faces/c.png",
        "faces/d.png",
    ]
    both = make_dm(tmp_path, include_list="subset.txt", exclude_list="glasses.txt")
    assert paths_of(both, "train") == ["faces/a.png", "faces/d.png"]
    (tmp_path / "nomatch.txt").write_text("zzz\n")
    with pytest.raises(UserError, match="include_list"):
        make_dm(tmp_path, include_list="nomatch.txt").setup()


def test_max_images_per_split_tops_up_past_corrupt_files(tmp_path):
    (tmp_path / "0.png").write_bytes(b"garbage")
    for i in range(1, 6):
        write_image(tmp_path / f"{i}.png", seed=i)
    dm = make_dm(tmp_path, max_images=2)
    assert paths_of(dm, "train") == ["1.png", "2.png"]
    assert len(dm.dataset("test")) == 2
    assert dm.num_skipped == 1


@pytest.mark.parametrize("empty", [False, True])
def test_missing_or_empty_root_is_one_line_with_path_and_hint(tmp_path, empty):
    root = tmp_path / "celebahq"
    if empty:
        (root / "train").mkdir(parents=True)
    hint = "expected <root>/*.png from the CelebA-HQ 1024 release"
    dm = make_dm(root, layout_hint=hint)
    with pytest.raises(UserError) as err:
        dm.setup()
    message = str(err.value)
    assert str(root) in message and hint in message and "\n" not in message


def test_bad_option_values_fail_loudly_at_construction(tmp_path):
    with pytest.raises(UserError, match="resize_mode"):
        make_dm(tmp_path, resize_mode="crop")
    with pytest.raises(UserError, match="resolution"):
        make_dm(tmp_path, resolution=[1, 2, 3])
    with pytest.raises(UserError, match="val_fraction"):
        make_dm(tmp_path, val_fraction=0.6, test_fraction=0.5)
    write_image(tmp_path / "a.png")
    with pytest.raises(UserError, match="data.mdb"):
        make_dm(tmp_path, format="lmdb").setup()


def _encode(seed: int, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def test_lsun_lmdb_loads_through_format_auto(tmp_path):
    import lmdb

    root = tmp_path / "church_outdoor_train_lmdb"
    env = lmdb.open(str(root), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, fmt in enumerate(["WEBP", "PNG", "JPEG", "WEBP"]):
            txn.put(f"{i:040x}".encode(), _encode(i, fmt))
        txn.put(b"broken", b"\x00" * 64)
    env.close()
    dm = make_dm(root, format="auto", batch_size=2, num_workers=0)
    dm.setup()
    assert dm.num_skipped == 1 and len(dm.dataset("train")) == 4
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 8, 8) and batch["image"].std() > 0.1
    assert all(len(p) == 40 for p in batch["path"])
    assert len(dm.dataset("test")) == 4  # a single LMDB serves every split
    workers = make_dm(root, format="lmdb", batch_size=5, num_workers=2)
    assert sorted(p for b in workers.train_dataloader() for p in b["path"]) == sorted(paths_of(dm, "train"))
    lmdb_in_parent = make_dm(tmp_path, format="auto")  # root/<name>_train_lmdb is found as the train split
    assert paths_of(lmdb_in_parent, "train")[0].startswith("church_outdoor_train_lmdb/")


def test_samples_are_real_photos_at_the_requested_resolution(tmp_path):
    names = ["astronaut", "chelsea", "camera"]
    dm = SampleImagesDataModule(root=tmp_path / "samples", names=names, resolution=64)
    dm.setup()
    ds = dm.dataset("test")
    assert sorted(ds[i]["path"] for i in range(len(ds))) == ["astronaut.png", "camera.png", "chelsea.png"]
    for i in range(len(ds)):
        image = ds[i]["image"]
        assert image.shape == (3, 64, 64) and image.std() > 0.1
    assert (tmp_path / "samples" / "chelsea.png").is_file()


def test_synthetic_is_deterministic_per_seed():
    def first_images(seed):
        dm = SyntheticDataModule(num_images=8, resolution=[16, 24], seed=seed, batch_size=4)
        return next(iter(dm.val_dataloader()))["image"], dm

    a, dm = first_images(3)
    b, _ = first_images(3)
    c, _ = first_images(4)
    assert a.shape == (1, 3, 16, 24) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.std() > 0.1 and a.abs().max() <= 1
    assert dm.describe()["train"] + dm.describe()["val"] + dm.describe()["test"] == 8


@pytest.mark.parametrize("config", IMAGE_CONFIGS)
def test_every_data_config_instantiates_without_touching_disk(tmp_path, config):
    cfg = OmegaConf.create(
        {
            "paths": {"data_dir": str(tmp_path / "data"), "cache_dir": str(tmp_path / "cache")},
            "seed": 7,
            "data": OmegaConf.load(CONF_DIR / f"{config}.yaml"),
        }
    )
    dm = instantiate(cfg.data)
    assert isinstance(dm, ImageDataModule) and dm.seed == 7
    assert not any(tmp_path.iterdir())  # nothing created or required before setup()
    if dm.root is not None:
        assert str(dm.root).startswith(str(tmp_path))


def test_interface_unknown_split_and_predict_is_the_test_split_in_order():
    dm = SyntheticDataModule(num_images=16, resolution=8, batch_size=3, eval_batch_size=2, seed=1)
    assert dm.splits == ("train", "val", "test")
    with pytest.raises(UserError, match="unknown data split 'training'"):
        dm.dataset("training")
    test_paths = [dm.dataset("test")[i]["path"] for i in range(len(dm.dataset("test")))]
    assert [p for b in dm.predict_dataloader() for p in b["path"]] == test_paths
    assert [p for b in dm.test_dataloader() for p in b["path"]] == test_paths
    with pytest.deprecated_call():
        assert dm.train_set is dm.dataset("train")


def test_train_order_and_flips_come_from_the_data_seed_and_resume(tmp_path):
    arr = np.zeros((8, 8, 3), dtype=np.uint8)
    arr[:, :4] = 255  # left half white: a flipped image starts black
    for i in range(6):
        Image.fromarray(arr).save(tmp_path / f"{i}.png")

    def loader(seed=0):
        return make_dm(tmp_path, hflip=True, batch_size=2, seed=seed).train_dataloader()

    def draws(dl, k):
        out = []
        while len(out) < k:
            for b in dl:
                out.append((b["path"], (b["image"][:, 0, 0, 0] < 0).tolist()))
                if len(out) == k:
                    break
        return out

    torch.manual_seed(0)
    full = draws(loader(), 7)  # 3 batches an epoch: crosses two epoch boundaries
    torch.manual_seed(1)  # neither order nor flips depend on the global RNG
    assert draws(loader(), 7) == full and draws(loader(seed=1), 7) != full
    assert {f for _, flips in full for f in flips} == {True, False}
    first = loader()
    assert draws(first, 4) == full[:4]
    resumed = loader()
    resumed.load_state_dict(first.state_dict())
    assert draws(resumed, 3) == full[4:]
