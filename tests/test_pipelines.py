"""The Python API: ``load_pipeline(<run dir>)(images)`` for every method gives what the method's edit stage wrote
(the same ``edit_batch``), without Hydra; bad calls are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffedit_lab import load_pipeline
from diffedit_lab.run import run
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import to_uint8


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def _same_as_written(edited: torch.Tensor, folder: Path, names: list[str]) -> None:
    """The pipeline's images, rounded as the writer rounds them, equal the stage's PNGs (±1 level: the stage ran in
    batches, the pipeline in one)."""
    ours = to_uint8(edited).permute(0, 2, 3, 1).cpu().numpy().astype(np.int16)
    for img, name in zip(ours, names, strict=True):
        assert np.abs(img - _png(folder / f"{name}.png")).max() <= 1, name


def _test_images(result, n: int) -> tuple[torch.Tensor, list[str]]:
    """The first ``n`` test images the stage edited, and the names the stage wrote them under."""
    ds = result.objects["datamodule"].dataset("test")
    items = [ds[i] for i in range(n)]
    names = [Path(it["path"]).stem if "path" in it else f"{int(it['index']):05d}" for it in items]
    return torch.stack([it["image"] for it in items]), names


def test_sdd_pipeline_edits_codes_like_the_edit_stage(compose, tmp_path):
    out = tmp_path / "sdd"
    result = run(compose("stage=[select,fit,edit]", "method.fit.steps=2", "method.edit.photos=null",
                         "method.edit.max_images=2", out_dir=out))  # fmt: skip
    pipe = load_pipeline(out)
    seeds = [int(result.objects["datamodule"].dataset("test")[i]["seed"]) for i in range(2)]
    got = pipe(seeds=seeds)
    assert got.images.shape == got.inputs.shape and got.latency_ms_per_image > 0
    _same_as_written(got.images, out / "edit" / "edited", ["00000", "00001"])
    _same_as_written(got.inputs, out / "edit" / "original", ["00000", "00001"])
    with pytest.raises(UserError, match="trained for the prompt"):
        pipe(seeds=seeds, prompt="a different text")
    # save_pretrained: a folder of its own (config + the trained mapper), loaded back to the same edits
    saved = pipe.save_pretrained(tmp_path / "angry_mapper")
    assert sorted(p.name for p in saved.iterdir()) == ["config_resolved.yaml", "mapper.safetensors"]
    again = load_pipeline(saved)(seeds=seeds)
    torch.testing.assert_close(again.images, got.images, rtol=0, atol=0)


def test_baseline_pipeline_needs_no_training_and_takes_any_prompt(compose, tmp_path):
    out = tmp_path / "sdedit"
    result = run(compose("method=sdedit/tiny", "stage=edit", "method.edit.max_images=2", "method.edit.batch_size=2",
                         out_dir=out))  # fmt: skip
    pipe = load_pipeline(out)
    images, names = _test_images(result, 2)
    _same_as_written(pipe(images).images, out / "edit" / "edited", names)
    other = pipe(images, prompt="a watercolour painting")
    assert other.images.shape == images.shape
    assert not torch.equal(other.images, pipe(images).images)


def test_a_pipeline_from_a_composed_config(compose, tmp_path):
    """Built from components (no run dir): a baseline edits at once; a trained method asks for its run dir."""
    from diffedit_lab.pipelines import pipeline_from_config

    pipe = pipeline_from_config(compose("method=sdedit/tiny").method)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    assert pipe(images).images.shape == images.shape
    with pytest.raises(UserError, match="give run_dir"):
        pipeline_from_config(compose("method=sdd/tiny").method)


def test_rectifier_pipeline_applies_the_trained_editor(compose, tmp_path):
    out = tmp_path / "rect"
    result = run(compose("method=rectifier/tiny", "stage=[fit,edit]", "method.fit.steps=2", "method.edit.steps=2",
                         out_dir=out))  # fmt: skip
    pipe = load_pipeline(out)
    images, names = _test_images(result, len(list((out / "edit" / "edited").glob("*.png"))))
    _same_as_written(pipe(images).images, out / "edit" / "edited", names)


def test_asyrp_pipeline_edits_like_its_edit_stage(compose, tmp_path):
    out = tmp_path / "asyrp"
    result = run(compose("method=asyrp/tiny", "stage=[fit,edit]", "method.fit.epochs=1", out_dir=out))
    pipe = load_pipeline(out)
    images, names = _test_images(result, len(list((out / "edit" / "edited").glob("*.png"))))
    got = pipe(images)
    assert "latents" in got.extras
    _same_as_written(got.images, out / "edit" / "edited", names)


def test_sdft_pipeline_translates_with_the_ema(compose, tmp_path):
    from diffedit_lab.utils.instantiate import instantiate

    out = tmp_path / "sdft"
    result = run(compose("method=sdft/tiny", "stage=[fit,translate]", "method.fit.steps=2", "method.fit.fid_every=0",
                         "method.translate.batch_size=1", "method.translate.max_images=1", out_dir=out))  # fmt: skip
    pipe = load_pipeline(out)
    source = instantiate(result.objects["method"].cfg.translate.source)
    source.setup("test")
    image = source.dataset("test")[0]
    got = pipe(image["image"][None])
    _same_as_written(got.images, out / "translate" / "translated", [Path(image["path"]).stem])


def test_bad_calls_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no config_resolved.yaml"):
        load_pipeline(tmp_path)
