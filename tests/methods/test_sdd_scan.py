"""SDD's timestep scan (stage select) on the REAL tiny config (method=sdd/tiny): each image is scored on its own
gradient — top-k per image, as in the reference search that feeds one image at a time — so the scores do not
depend on ``selection.batch_size``; training keeps the reference's batch-wide top-k."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from diffedit_lab.diffusion import score_distillation
from diffedit_lab.methods.sdd import scan
from diffedit_lab.methods.sdd import selection as sel
from diffedit_lab.run import build_method
from diffedit_lab.utils.config import compose_config

SEEDS = [0, 1, 2, 3]
GRID = [200, 500, 800]
TOPK = 64  # method=sdd/tiny: guidance.topk


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    out = tmp_path_factory.mktemp("sdd_scan")
    cfg = compose_config(
        [
            "method=sdd/tiny",
            "logger=none",
            "callbacks=none",
            f"paths.output_dir={out}",
            f"paths.cache_dir={out / 'cache'}",
        ]
    )
    m = build_method(cfg.method)
    assert m.cfg.guidance.topk == TOPK
    return m


@pytest.fixture
def topk_calls(monkeypatch):
    """Every top-k call of the SDS: (k, per_sample, kept entries per sample)."""
    calls: list[tuple] = []
    original = score_distillation.topk_sparsify

    def recording(grad, k, per_sample=False):
        out = original(grad, k, per_sample=per_sample)
        calls.append((k, per_sample, (out != 0).flatten(1).sum(1).tolist()))
        return out

    monkeypatch.setattr(score_distillation, "topk_sparsify", recording)
    return calls


def _scan(module, batch_size: int) -> sel.ScoreTable:
    """The scan as stage select runs it: the train split's seeds through ``_scan_codes`` at ``batch_size``."""
    module.cfg.selection = dataclasses.replace(module.cfg.selection, batch_size=batch_size)
    data = [{"seed": s} for s in SEEDS]
    ctx = SimpleNamespace(datamodule=SimpleNamespace(setup=lambda stage: None, dataset=lambda split: data))
    return scan.scan_timesteps(module, scan._scan_codes(module, ctx), GRID, num_codes=len(SEEDS), seed=3)


def test_scan_scores_do_not_depend_on_the_scan_batch_size(module, topk_calls):
    tables = {bs: _scan(module, bs) for bs in (1, 2, 4)}
    # every image kept exactly k latent entries, whatever its batch
    assert topk_calls and all(per_sample and k == TOPK for k, per_sample, _ in topk_calls)
    assert all(kept == [TOPK] * len(kept) for _, _, kept in topk_calls)
    assert sorted({len(kept) for _, _, kept in topk_calls}) == [1, 2, 4]
    ref = tables[1]
    assert ref.timesteps == GRID and all(v > 0 for v in ref.l1)
    for bs in (2, 4):
        for name in ("entropy", "l1"):
            assert tables[bs].column(name) == pytest.approx(
                ref.column(name), rel=2e-6, abs=0
            )  # float32 sums in another order


def test_scan_image_gradient_per_image_matches_the_image_alone(module):
    """The batched scan's gradient of image i is the gradient of image i scanned alone (same generators)."""
    w = module.codes_from_batch({"seed": torch.tensor(SEEDS[:2])})
    x = module.synthesize(w)
    text, neg = module.cfg.prompt.text, module.cfg.guidance.negative_prompt
    both = module.sds.image_gradient(
        x, 500, text, neg, generator=scan.image_generators(0, 0, 2, 500), per_sample_topk=True
    )
    alone = module.sds.image_gradient(
        x[1:], 500, text, neg, generator=scan.image_generators(0, 1, 1, 500), per_sample_topk=True
    )
    assert alone.abs().sum() > 0
    # equal up to float32 rounding (a batch of 1 and of 2 take different kernel paths)
    assert float((both[1:] - alone).norm() / alone.norm()) < 1e-5


def test_training_step_keeps_the_batch_wide_topk(module, topk_calls):
    module.selection = sel.select("fixed_500")
    module.log_dict = lambda *a, **k: None
    module.training_step({"seed": torch.tensor([3, 4]), "index": torch.tensor([0, 1])}, 0)
    ((k, per_sample, kept),) = topk_calls
    assert k == TOPK and not per_sample
    assert sum(kept) == TOPK  # k over the whole batch of 2 (the scan keeps k in each image)


def test_cache_key_ignores_the_batch_size_but_not_what_changes_the_scores(module):
    cfg = module.cfg
    key = scan.selection_key(cfg)
    sel_cfg, guid = cfg.selection, cfg.guidance
    assert scan.selection_key(dataclasses.replace(cfg, selection=dataclasses.replace(sel_cfg, batch_size=7))) == key
    for other in (
        dataclasses.replace(cfg, guidance=dataclasses.replace(guid, topk=128)),
        dataclasses.replace(cfg, guidance=dataclasses.replace(guid, guidance_scale=7.5)),
        dataclasses.replace(cfg, selection=dataclasses.replace(sel_cfg, seed=5)),
        dataclasses.replace(cfg, selection=dataclasses.replace(sel_cfg, num_codes=3)),
    ):
        assert scan.selection_key(other) != key


def test_cache_key_carries_the_scan_version(module, monkeypatch):
    key = scan.selection_key(module.cfg)
    monkeypatch.setattr(scan, "SCAN_VERSION", scan.SCAN_VERSION + 1)
    assert scan.selection_key(module.cfg) != key  # caches of an older scan procedure are not reused
