"""Evaluation: formulas vs hand values, FID/KID with a tiny extractor, caches, folders, offline errors."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from diffedit_lab.evaluation.fid import INCEPTION_FILE, TinyFeatureExtractor, build_fid, build_kid
from diffedit_lab.evaluation.folder_eval import evaluate_folders
from diffedit_lab.evaluation.lpips import LPIPS
from diffedit_lab.evaluation.metrics import CLIPScore, DirectionalCLIPSimilarity, IdentitySimilarity
from diffedit_lab.evaluation.suite import MetricSuite, to_uint8
from diffedit_lab.testing.clip import tiny_clip
from diffedit_lab.utils.errors import UserError


def images(n: int, seed: int = 0, size: int = 24) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


class CountingExtractor(TinyFeatureExtractor):
    def __init__(self) -> None:
        super().__init__(num_features=8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No downloads and an empty torch hub cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


# ----------------------------------------------------------------------------------- pixel metrics
def test_ssim_identity_and_psnr_hand_value():
    suite = MetricSuite(["psnr", "ssim", "l1", "l2"])
    x = images(4, size=32) * 0.5  # stays inside [-1, 1] after +delta
    delta = 0.1
    suite.update_paired(x + delta, x)
    out = suite.compute()
    mse01 = (delta / 2) ** 2  # metrics work in [0, 1]: a [-1, 1] shift of delta is delta/2
    assert out["psnr"] == pytest.approx(10 * math.log10(1.0 / mse01), rel=1e-4)
    assert out["l1"] == pytest.approx(delta / 2, rel=1e-4)
    assert out["l2"] == pytest.approx(mse01, rel=1e-3)
    suite.reset()
    suite.update_paired(x, x)
    assert suite.compute()["ssim"] == pytest.approx(1.0, abs=1e-6)


def test_means_over_samples_not_batches():
    """Batch 1 has 1 image with error 0.2, batch 2 has 3 with error 0: mean over images = 0.05, not 0.1."""
    enc = nn.Flatten()
    ident = IdentitySimilarity(enc)
    a, b = torch.ones(1, 3, 2, 2), -torch.ones(1, 3, 2, 2)
    ident.update(a, b)  # cos = -1
    ident.update(images(3), images(3))  # cos = 1 (x3)
    assert float(ident.compute()) == pytest.approx((-1 + 3) / 4)
    suite = MetricSuite(["l1"])
    x = torch.zeros(4, 3, 8, 8)
    suite.update_paired(x[:1] + 0.4, x[:1])  # |0.4| in [-1,1] → 0.2 in [0,1]
    suite.update_paired(x[1:], x[1:])
    assert suite.compute()["l1"] == pytest.approx(0.05, rel=1e-5)


def test_identity_similarity_self_is_one():
    metric = IdentitySimilarity(nn.Sequential(nn.Flatten(), nn.Linear(3 * 24 * 24, 8)))
    x = images(5)
    metric.update(x, x)
    assert float(metric.compute()) == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------------ CLIP metrics
class StubClip(nn.Module):
    """Image embedding = mean colour per channel; text embeddings hand-built."""

    texts = {"src": torch.tensor([0.0, 0.0, 0.0]), "red": torch.tensor([1.0, 0.0, 0.0])}

    def encode_image(self, x):
        return x.mean(dim=(2, 3))

    def encode_text(self, t):
        return torch.stack([self.texts[s] for s in ([t] if isinstance(t, str) else t)])

    def directional_similarity(self, src, tgt, src_text, tgt_text):
        d_img = self.encode_image(tgt) - self.encode_image(src)
        d_txt = self.encode_text(tgt_text) - self.encode_text(src_text)
        return F.cosine_similarity(d_img, d_txt, dim=-1)

    def clip_score(self, x, texts):
        return F.cosine_similarity(self.encode_image(x), self.encode_text(texts), dim=-1)


def test_directional_clip_similarity_hand_built():
    metric = DirectionalCLIPSimilarity(StubClip(), "src", "red")
    src = torch.zeros(2, 3, 4, 4)
    edited = src.clone()
    edited[0, 0] += 0.5  # pure red shift: cos 1
    edited[1, 0] += 0.5
    edited[1, 1] += 0.5  # red+green: cos 1/sqrt(2)
    metric.update(src, edited)
    assert float(metric.compute()) == pytest.approx((1 + 1 / math.sqrt(2)) / 2, rel=1e-6)


def test_clip_score_scaled():
    metric = CLIPScore(StubClip(), "red")
    img = torch.zeros(1, 3, 4, 4)
    img[:, 0], img[:, 1] = 0.5, 0.5
    metric.update(img)
    assert float(metric.compute()) == pytest.approx(100 / math.sqrt(2), rel=1e-6)


def test_suite_edit_metrics_with_tiny_clip():

    suite = MetricSuite(["clip_dir", "clip_score"], clip=lambda: tiny_clip(), src_text="a", tgt_text="b")
    assert suite.metrics["clip_dir"].clip is suite.metrics["clip_score"].clip  # built once
    suite.update_edit(images(2), images(2, seed=1))
    out = suite.compute()
    assert -1 <= out["clip_dir"] <= 1 and -100 <= out["clip_score"] <= 100


# ------------------------------------------------------------------------------------------ FID/KID
def smooth_and_noised(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random images (uint8) and the same with strong pixel noise: a clear distribution shift."""
    g = torch.Generator().manual_seed(0)
    smooth = F.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, size=24, mode="bilinear")
    noised = (smooth + 0.5 * torch.randn(smooth.shape, generator=g)).clamp(-1, 1)
    return to_uint8(smooth), to_uint8(noised)


def test_fid_same_zero_noised_larger():
    real, noised = smooth_and_noised()
    fid = build_fid(TinyFeatureExtractor())
    fid.update(real, real=True)
    fid.update(real, real=False)
    same = float(fid.compute())
    n = fid.real_features_num_samples
    mu = fid.real_features_sum / n
    scale = float((fid.real_features_cov_sum - n * torch.outer(mu, mu)).trace() / (n - 1))  # tr(Σ_real)
    assert abs(same) < 1e-3 * scale
    fid.reset()  # keeps real statistics
    fid.update(noised, real=False)
    assert float(fid.compute()) > 0.1 * scale


def test_kid_same_small_noised_larger():
    real, noised = smooth_and_noised()
    kid = build_kid(TinyFeatureExtractor(), subsets=20, subset_size=20)
    kid.update(real, real=True)
    kid.update(real, real=False)
    same = float(kid.compute()[0])
    kid.reset()
    kid.update(noised, real=False)
    noised_kid = float(kid.compute()[0])
    assert noised_kid > 10 * abs(same)


def test_real_stats_cache_skips_reference_pass(tmp_path):
    real, fake = images(12), images(12, seed=5)
    kwargs = dict(real_stats_dir=str(tmp_path / "stats"), dataset_name="toy", resolution=24, kid_subset_size=50)
    first = MetricSuite(["fid", "kid"], fid_feature=CountingExtractor(), **kwargs)
    first.update_unpaired_real(real)
    first.update_unpaired_fake(fake)
    torch.manual_seed(0)  # KID draws its subsets from the global RNG: same draws → same float sums
    out1 = first.compute()
    assert len(list((tmp_path / "stats").glob("toy_24px_tiny8-seed0_*.pt"))) == 2

    extractor = CountingExtractor()
    second = MetricSuite(["fid", "kid"], fid_feature=extractor, **kwargs)
    assert second.cached_real == {"fid", "kid"} and not second.needs_real_images
    second.update_unpaired_real(real)  # ignored: statistics came from disk
    assert extractor.calls == 0
    second.update_unpaired_fake(fake)
    assert extractor.calls == 2  # fake side only (once for FID, once for KID)
    torch.manual_seed(0)
    out2 = second.compute()
    assert out2["fid"] == pytest.approx(out1["fid"], rel=1e-9)
    assert out2["kid"] == pytest.approx(out1["kid"], rel=1e-9, abs=1e-12)


def test_fid_inception_offline_fails_fast(offline):
    with pytest.raises(UserError, match=INCEPTION_FILE):
        build_fid("inception")
    with pytest.raises(UserError, match="file not found"):
        build_fid("inception", weights_path="/nonexistent/inception.pth")


def test_fid_inception_from_local_weights_file(tmp_path, offline, monkeypatch):
    """The path an offline user takes: a local copy of torch-fidelity's Inception weights (random here)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tf_inception

    cls = tf_inception.FeatureExtractorInceptionV3
    with monkeypatch.context() as patch:  # build a random network once to obtain a valid weights file
        patch.setattr(cls, "load_state_dict", lambda self, state, strict=True: None)
        patch.setattr(tf_inception, "load_state_dict_from_url", lambda *a, **k: {})
        random_net = cls("inception-v3-compat", ["2048"])
    path = tmp_path / INCEPTION_FILE
    torch.save(random_net.state_dict(), path)
    fid = build_fid(64, weights_path=str(path))
    assert torch.equal(fid.inception.Conv2d_1a_3x3.conv.weight, random_net.Conv2d_1a_3x3.conv.weight)
    x = to_uint8(images(3, size=32))
    fid.update(x, real=True)
    fid.update(x, real=False)
    assert abs(float(fid.compute())) < 1e-6


def test_suite_skips_unavailable_metric_or_raises_when_strict(offline, caplog):
    suite = MetricSuite(["psnr", "fid", "lpips"])
    assert set(suite.metrics) == {"psnr"} and set(suite.skipped) == {"fid", "lpips"}
    assert "alexnet-owt-7be5be79.pth" in suite.skipped["lpips"]
    assert sum("skipped" in r.message for r in caplog.records) == 2
    with pytest.raises(UserError, match=INCEPTION_FILE):
        MetricSuite(["fid"], strict=True)
    with pytest.raises(UserError, match="unknown metric"):
        MetricSuite(["fidd"])


# ------------------------------------------------------------------------------------------- LPIPS
def test_lpips_from_local_backbone_file(tmp_path, offline):
    path = tmp_path / "squeezenet1_1.pth"
    backbone = torchvision.models.squeezenet1_1(weights=None)
    torch.save(backbone.state_dict(), path)
    metric = LPIPS("squeeze", backbone_weights_path=str(path))
    assert torch.equal(metric.net.net.slices[0][0].weight, backbone.features[0].weight)
    x = images(2, size=32)
    metric.update(x, x)
    assert float(metric.compute()) == pytest.approx(0.0, abs=1e-7)
    metric.update(x, x.flip(0))
    assert float(metric.compute()) > 0


def test_lpips_is_the_public_torchmetrics_metric_and_leaves_the_hub_cache_alone(tmp_path, offline):
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    path = tmp_path / "squeezenet1_1.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    hub_before = torch.hub.get_dir()
    metric = LPIPS("squeeze", backbone_weights_path=str(path))
    assert isinstance(metric, LearnedPerceptualImagePatchSimilarity)
    assert torch.hub.get_dir() == hub_before and not (tmp_path / "torch_home").exists()  # nothing cached
    a, b = images(3, size=32), images(3, seed=1, size=32)
    metric.update(a[:1], b[:1])  # a batch of one and a batch of two: the mean is over the three pairs
    metric.update(a[1:], b[1:])
    per_pair = torch.stack([metric.net(a[i : i + 1], b[i : i + 1]).flatten() for i in range(3)])
    assert float(metric.compute()) == pytest.approx(float(per_pair.mean()), rel=1e-5)


def test_lpips_backbone_errors_are_one_line(tmp_path, offline):
    with pytest.raises(UserError) as info:
        LPIPS("alex")  # neither a local file nor in the (empty) torch hub cache
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message and "lpips.backbone_path" in message and "\n" not in message
    wrong = tmp_path / "alex.pth"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), wrong)
    with pytest.raises(UserError, match="is not a torchvision squeezenet1_1 checkpoint"):
        LPIPS("squeeze", backbone_weights_path=str(wrong))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01" * 100)
    with pytest.raises(UserError, match="LPIPS squeezenet1_1 backbone: .* is not a readable PyTorch checkpoint"):
        LPIPS("squeeze", backbone_weights_path=str(garbage))
    with pytest.raises(UserError, match="net_type"):
        LPIPS("resnet")


def test_sample_means_are_torchmetrics_mean_metrics_merged_across_ranks():
    """What DDP sync does: states of two ranks are summed, so the mean is over all samples of both."""
    from torchmetrics.aggregation import MeanMetric

    rank0, rank1 = IdentitySimilarity(nn.Flatten()), IdentitySimilarity(nn.Flatten())
    assert isinstance(rank0, MeanMetric)
    rank0.update(torch.ones(1, 3, 2, 2), -torch.ones(1, 3, 2, 2))  # cos -1, one sample
    rank1.update(images(3), images(3))  # cos 1, three samples
    rank0.merge_state(rank1)
    assert float(rank0.compute()) == pytest.approx((-1 + 3) / 4)


# -------------------------------------------------------------------------------------- folder eval
def _write(folder, name, seed, offset=0, size=20):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(20, 236, (size, size, 3)) + offset
    Image.fromarray(pixels.astype(np.uint8)).save(folder / name)


def test_evaluate_folders_pairs_by_stem(tmp_path):
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    for i in range(4):
        _write(pred, f"{i:03d}.png", seed=i, offset=10)
        _write(ref, f"{i:03d}.bmp" if i < 3 else "other.png", seed=i)  # lossless, other extension
    (pred / "broken.png").write_bytes(b"not an image")
    _write(ref, "extra.png", seed=9)
    suite = MetricSuite(["psnr", "fid"], fid_feature=TinyFeatureExtractor())
    out = evaluate_folders(pred, ref, suite, resolution=20, batch_size=2)
    assert (out["n_pred"], out["n_ref"], out["n_paired"], out["n_unreadable"]) == (5, 5, 3, 1)
    assert out["psnr"] == pytest.approx(20 * math.log10(255 / 10), rel=1e-4)  # every pixel off by 10/255
    fid = suite.metrics["fid"]
    assert int(fid.fake_features_num_samples) == 4 and int(fid.real_features_num_samples) == 5


def test_evaluate_folders_missing_or_empty(tmp_path):
    suite = MetricSuite(["psnr"])
    (tmp_path / "empty").mkdir()
    _write(tmp_path / "ok", "a.png", seed=0)
    with pytest.raises(UserError, match="not found"):
        evaluate_folders(tmp_path / "missing", tmp_path / "ok", suite)
    with pytest.raises(UserError, match="has no images"):
        evaluate_folders(tmp_path / "ok", tmp_path / "empty", suite)


def test_folder_eval_lists_and_decodes_like_the_datasets(tmp_path):
    from diffedit_lab.data import images as data_images
    from diffedit_lab.evaluation import folder_eval

    assert folder_eval.IMAGE_EXTENSIONS is data_images.IMAGE_EXTENSIONS
    assert folder_eval.load_image is data_images.load_image
    _write(tmp_path / "pred", "a.png", seed=0)
    _write(tmp_path / "pred" / ".ipynb_checkpoints", "a.png", seed=1)  # hidden: ignored, like the datasets do
    (tmp_path / "pred" / "._a.png").write_bytes(b"macOS metadata")
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "pred" / "clear.png")
    found = folder_eval.list_images(tmp_path / "pred", "prediction")
    assert sorted(found) == ["a", "clear"]
    clear = folder_eval.load_image(found["clear"], (2, 3))
    assert clear.shape == (3, 2, 3) and bool((clear == 1).all())  # transparent → white, as in the datasets
    (tmp_path / "pred" / "bad.png").write_bytes(b"not an image")
    assert folder_eval.load_image(tmp_path / "pred" / "bad.png", (2, 2)) is None
