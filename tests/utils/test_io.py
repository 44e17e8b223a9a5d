"""Image saving: one PNG per path with torchvision's uint8 rounding, grids through make_grid's layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import save_image

from diffedit_lab.utils.io import save_grid, save_images, to_uint8


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_hand_values_of_the_uint8_mapping():
    # 255·(x+1)/2 + 0.5, floored: -1 → 0, 1 → 255, 0 → 128 (127.5 rounds up), beyond [-1, 1] clamps.
    x = torch.tensor([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 128, 191, 255, 255]


def test_save_images_one_png_per_path_with_hand_values(tmp_path):
    images = torch.full((2, 3, 2, 3), -1.0)
    images[0, 0] = 1.0  # red
    images[1, :, 0, 0] = 0.0  # a grey pixel on black
    paths = [tmp_path / "a" / "red.png", tmp_path / "b" / "dot.png"]
    save_images(images, paths)
    red, dot = _pixels(paths[0]), _pixels(paths[1])
    assert red.shape == (2, 3, 3) and red.dtype == np.uint8
    assert (red[..., 0] == 255).all() and (red[..., 1:] == 0).all()
    assert dot[0, 0].tolist() == [128, 128, 128] and dot.sum() == 3 * 128


def test_png_bytes_equal_torchvision_save_image_of_the_unit_range(tmp_path):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 5, 7) * 2.2 - 1.1  # some values outside [-1, 1] are clamped
    save_images(images, [tmp_path / "0.png", tmp_path / "1.png"])
    for i in range(2):
        save_image(((images[i].clamp(-1, 1) + 1) / 2), tmp_path / f"ref{i}.png")
        assert (tmp_path / f"{i}.png").read_bytes() == (tmp_path / f"ref{i}.png").read_bytes()
        assert np.array_equal(_pixels(tmp_path / f"{i}.png"), to_uint8(images[i]).permute(1, 2, 0).numpy())


def test_save_images_needs_one_path_per_image(tmp_path):
    with pytest.raises(ValueError, match="2 images but 1 paths"):
        save_images(torch.zeros(2, 3, 2, 2), [tmp_path / "x.png"])


def test_save_grid_layout(tmp_path):
    images = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)])  # black, grey, white tiles
    path = save_grid(images, tmp_path / "g" / "grid.png", nrow=2)
    grid = _pixels(path)
    # 2 columns x 2 rows of 4 px tiles with 2 px white padding around and between: 2 + 2·(4 + 2) = 14
    assert grid.shape == (14, 14, 3)
    assert (grid[2:6, 2:6] == 0).all()  # first tile, black
    assert (grid[2:6, 8:12] == 128).all()  # second tile, grey
    assert (grid[8:12, 2:6] == 255).all()  # third tile (second row), white
    assert (grid[:2] == 255).all() and (grid[:, 6:8] == 255).all()  # padding is white
    assert (grid[8:12, 8:12] == 255).all()  # the empty fourth cell is padding colour


def test_image_grid_callback_writes_the_grid(tmp_path):
    from types import SimpleNamespace

    from diffedit_lab.callbacks.image_grid import ImageGridLogger

    tiles = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 1.0, -1.0, 1.0)])
    module = SimpleNamespace(
        training=True, eval=lambda: None, train=lambda mode: None, preview_images=lambda: {"edit": tiles}
    )
    trainer = SimpleNamespace(is_global_zero=True, global_step=6, loggers=[])
    ImageGridLogger(every_n_steps=2, out_dir=str(tmp_path)).on_train_batch_end(trainer, module, None, None, 0)
    grid = _pixels(tmp_path / "edit_step000006.png")
    assert grid.shape == (14, 14, 3)  # nrow defaults to half the batch: 2 x 2 tiles
    assert (grid[2:6, 2:6] == 0).all() and (grid[2:6, 8:12] == 255).all() and (grid[8:12, 2:6] == 0).all()


def test_image_grid_callback_zero_means_only_the_final_grid(tmp_path):
    from types import SimpleNamespace

    from diffedit_lab.callbacks.image_grid import ImageGridLogger

    tiles = torch.zeros(2, 3, 4, 4)
    module = SimpleNamespace(
        training=True, eval=lambda: None, train=lambda mode: None, preview_images=lambda: {"edit": tiles}
    )
    cb = ImageGridLogger(every_n_steps=0, out_dir=str(tmp_path))
    for step in (1, 2, 3):
        cb.on_train_batch_end(SimpleNamespace(is_global_zero=True, global_step=step, loggers=[]), module, None, None, 0)
    assert not list(tmp_path.glob("*.png"))
    cb.on_train_end(SimpleNamespace(is_global_zero=True, global_step=3, loggers=[]), module)
    assert [p.name for p in tmp_path.glob("*.png")] == ["edit_step000003.png"]
