"""SDD on an image dataset: each split is inverted into W+ once (cached by data, files, generator and projector),
then select/fit/edit/eval run on those codes as with ``data=latents``."""

from __future__ import annotations

import pytest
import torch

from diffedit_lab.data.latents import LatentCodesDataModule
from diffedit_lab.run import run

PHOTOS = ["data=samples", "data.names=[astronaut,chelsea,coffee]", "data.resolution=32", "data.batch_size=2"]


def test_sdd_on_a_folder_of_real_photos_end_to_end(compose, tmp_path):
    out = tmp_path / "run"
    codes_dir = tmp_path / "codes"
    result = run(compose(*PHOTOS, f"method.invert.cache_dir={codes_dir}", "method.fit.steps=2", out_dir=out))
    files = sorted(p.name.split("-")[0] for p in codes_dir.glob("*.pt"))
    assert files == ["test", "train"]
    train = torch.load(next(codes_dir.glob("train-*.pt")), weights_only=True)
    gen = result.objects["method"].generator
    assert train["codes"].shape == (3, gen.n_latent, gen.style_dim)  # every photo of the split, one code each
    assert train["names"] == ["astronaut", "chelsea", "coffee"]
    dm = result.objects["context"].datamodule
    assert isinstance(dm, LatentCodesDataModule)  # the stages ran on the inverted codes
    torch.testing.assert_close(dm.dataset("train")[0]["w"], train["codes"][0])
    assert result.metrics["eval/num_images"] == 3
    edited = sorted(p.stem for p in (out / "edit" / "edited").glob("*.png"))
    assert edited == ["astronaut", "chelsea", "coffee"]  # outputs named after the user's photos
    assert (out / "checkpoints" / "fit" / "last.ckpt").is_file()


def test_inverted_codes_are_reused_until_a_setting_changes(compose, tmp_path, monkeypatch):
    import diffedit_lab.models.projector as projector

    codes_dir = tmp_path / "codes"
    calls = {"n": 0}
    original = projector.project

    def counting(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(projector, "project", counting)
    base = [*PHOTOS, f"method.invert.cache_dir={codes_dir}", "method.invert.batch_size=2", "stage=select",
            "method.selection.cache=false"]  # fmt: skip
    run(compose(*base, out_dir=tmp_path / "a"))
    first = calls["n"]
    assert first == 4  # train: 3 photos in batches of 2, test: the same 3 photos → 2 + 2 projector calls
    run(compose(*base, out_dir=tmp_path / "b"))
    assert calls["n"] == first, "a second run with the same data/generator/projector inverts nothing"
    run(compose(*base, "method.invert.steps=2", out_dir=tmp_path / "c"))
    assert calls["n"] == 2 * first and len(list(codes_dir.glob("*.pt"))) == 4  # new projector setting → new files


def test_bad_invert_settings_stop_at_start(compose):
    from diffedit_lab.utils.errors import UserError

    with pytest.raises(UserError, match="method.invert.steps"):
        run(compose(*PHOTOS, "method.invert.steps=0"))
