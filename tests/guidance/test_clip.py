"""CLIPGuide: preprocessing, embeddings, directional loss, and the weight-loading paths a user runs."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffedit_lab.guidance.clip import CLIP_MEAN, CLIP_STD, CLIPGuide, directional_cosine, save_local_dir
from diffedit_lab.testing.clip import tiny_clip
from diffedit_lab.utils.errors import UserError


@pytest.fixture(scope="module")
def guide() -> CLIPGuide:
    return tiny_clip()


def test_frozen_and_eval(guide):
    assert not guide.training and not guide.model.training
    assert all(not p.requires_grad for p in guide.parameters())
    guide.train()
    assert not guide.model.training


def test_tiny_is_deterministic(guide):
    torch.manual_seed(123)  # the tiny model does not depend on the global RNG state
    other = tiny_clip()
    for a, b in zip(guide.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(tiny_clip(seed=1).model.visual.conv1.weight, guide.model.visual.conv1.weight)


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (40, 56)])
def test_preprocess_constant_image(guide, size):
    v = 0.3
    out = guide.preprocess(torch.full((2, 3, *size), v))
    assert out.shape == (2, 3, 32, 32)
    for c in range(3):
        expected = (((v + 1) / 2) - CLIP_MEAN[c]) / CLIP_STD[c]
        torch.testing.assert_close(out[:, c], torch.full_like(out[:, c], expected), atol=1e-5, rtol=0)


def test_preprocess_center_crops_non_square(guide):
    # Left third -1, right third +1, middle 0: a 32x96 image → resize is identity, the crop keeps the middle.
    img = torch.zeros(1, 3, 32, 96)
    img[..., :32] = -1
    img[..., 64:] = 1
    out = guide.preprocess(img) * guide.std + guide.mean
    torch.testing.assert_close(out, torch.full_like(out, 0.5), atol=1e-5, rtol=0)


def test_encode_shapes_and_norms(guide):
    img = guide.encode_image(torch.rand(3, 3, 50, 50) * 2 - 1)
    txt = guide.encode_text(["a cat", "a dog"])
    assert img.shape == (3, 32) and txt.shape == (2, 32)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(txt.norm(dim=-1), torch.ones(2))
    assert not torch.allclose(txt[0], txt[1])


def test_text_cache_reused(guide, monkeypatch):
    guide.encode_text(["cached text"])
    calls = []
    orig = guide.model.encode_text
    monkeypatch.setattr(guide.model, "encode_text", lambda *a, **k: calls.append(1) or orig(*a, **k))
    guide.encode_text(["cached text", "cached text"])
    assert calls == []
    guide.encode_text(["new text"])
    assert calls == [1]


def test_template_averaging():
    plain = tiny_clip()
    ens = tiny_clip(templates=["a photo of a {}.", "a drawing of a {}."])
    a = plain.encode_text(["a photo of a cat.", "a drawing of a cat."])
    expected = F.normalize(a.mean(0, keepdim=True), dim=-1)
    torch.testing.assert_close(ens.encode_text(["cat"]), expected)
    with pytest.raises(UserError, match="placeholder"):
        tiny_clip(templates=["no placeholder"])


@pytest.mark.parametrize(
    ("d_txt", "loss"),
    [
        ([2.0, 0.0, 0.0], 0.0),
        ([-1.0, 0.0, 0.0], 2.0),
        ([0.0, 3.0, 0.0], 1.0),
        ([1.0, 1.0, 0.0], 1 - 1 / math.sqrt(2)),
    ],
)
def test_directional_cosine_hand_values(d_txt, loss):
    d_img = torch.tensor([[1.0, 0.0, 0.0]])
    got = 1 - directional_cosine(d_img, torch.tensor([d_txt]))
    torch.testing.assert_close(got, torch.tensor([loss]))


def _stub_encoders(guide, monkeypatch, image_vectors: dict[float, list[float]], text_vectors: dict[str, list[float]]):
    """encode_image maps each image to the vector keyed by its (constant) pixel value; encode_text by text."""

    def encode_image(x):
        return torch.tensor([image_vectors[round(float(img.mean()), 3)] for img in x])

    def encode_text(texts):
        return torch.tensor([text_vectors[t] for t in ([texts] if isinstance(texts, str) else texts)])

    monkeypatch.setattr(guide, "encode_image", encode_image)
    monkeypatch.setattr(guide, "encode_text", encode_text)


def _constant_images(*values: float) -> torch.Tensor:
    return torch.stack([torch.full((3, 4, 4), v) for v in values])


def test_directional_similarity_and_loss_hand_values(guide, monkeypatch):
    """Text direction T(tgt) - T(src) = (0, 1, 0). Image directions: (0, 1, 0) → cos 1, (0, -1, 0) → cos -1,
    (1, 1, 0) → cos 1/√2, (0, 0, 2) → cos 0; the loss is the mean of 1 - cos."""
    s = 1 / math.sqrt(2)
    _stub_encoders(
        guide,
        monkeypatch,
        image_vectors={
            0.1: [1.0, 0.0, 0.0],  # sources
            0.2: [0.0, 0.0, 1.0],
            0.3: [s, s, 0.0],
            0.4: [0.0, 1.0, 0.0],
            0.5: [1.0, 1.0, 0.0],  # edits
            0.6: [0.0, -1.0, 1.0],
            0.7: [1.0 + s, 1.0 + s, 0.0],
            0.8: [0.0, 1.0, 2.0],
        },
        text_vectors={"a face": [1.0, 0.0, 0.0], "a smiling face": [1.0, 1.0, 0.0]},
    )
    src, tgt = _constant_images(0.1, 0.2, 0.3, 0.4), _constant_images(0.5, 0.6, 0.7, 0.8)
    sim = guide.directional_similarity(src, tgt, "a face", "a smiling face")
    torch.testing.assert_close(sim, torch.tensor([1.0, -1.0, s, 0.0]))
    loss = guide.directional_loss(src, tgt, "a face", "a smiling face")
    torch.testing.assert_close(loss, torch.tensor((0.0 + 2.0 + (1 - s) + 1.0) / 4))
    # one text pair per sample: the second sample's text direction is (0, -1, 0), so it now agrees (cos 1)
    per_sample = guide.directional_similarity(
        src[:2], tgt[:2], ["a face", "a smiling face"], ["a smiling face", "a face"]
    )
    torch.testing.assert_close(per_sample, torch.tensor([1.0, 1.0]))


def test_directional_loss_zero_when_directions_align(guide, monkeypatch):
    """Stub the encoders so the image direction equals the text direction: loss exactly 0."""
    direction = F.normalize(torch.randn(32), dim=0)
    monkeypatch.setattr(guide, "encode_image", lambda x: x.flatten(1)[:, :1] * direction)
    monkeypatch.setattr(guide, "encode_text", lambda t: torch.zeros(1, 32) if t == "src" else direction[None])
    src, tgt = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
    torch.testing.assert_close(guide.directional_loss(src, tgt, "src", "tgt"), torch.tensor(0.0))
    torch.testing.assert_close(guide.directional_loss(tgt, src, "src", "tgt"), torch.tensor(2.0))


def test_gradient_reaches_input(guide):
    img = (torch.rand(2, 3, 48, 48) * 2 - 1).requires_grad_(True)
    guide.directional_loss(img.detach(), img, "a face", "an angry face").backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_clip_score_hand_values(guide, monkeypatch):
    """Unit image embeddings (1, 0), (0.6, 0.8), (-0.8, 0.6) against the text embedding (1, 0): 1, 0.6, -0.8."""
    _stub_encoders(
        guide,
        monkeypatch,
        image_vectors={0.1: [1.0, 0.0], 0.2: [0.6, 0.8], 0.3: [-0.8, 0.6]},
        text_vectors={"a cat": [1.0, 0.0], "a dog": [0.0, 1.0]},
    )
    images = _constant_images(0.1, 0.2, 0.3)
    torch.testing.assert_close(guide.clip_score(images, "a cat"), torch.tensor([1.0, 0.6, -0.8]))
    torch.testing.assert_close(guide.clip_score(images, ["a cat", "a dog", "a dog"]), torch.tensor([1.0, 0.8, 0.6]))


def test_clip_score_of_the_real_tiny_model_is_a_cosine(guide):
    img = torch.rand(2, 3, 32, 32) * 2 - 1
    score = guide.clip_score(torch.cat([img, img]), "a cat")
    assert score.shape == (4,) and bool((score.abs() <= 1 + 1e-6).all())
    torch.testing.assert_close(score[:2], score[2:])  # the same image scores the same in any batch position


def test_local_dir_round_trip(guide, tmp_path):
    spec = save_local_dir(guide, tmp_path / "tiny_clip")
    assert (tmp_path / "tiny_clip" / "open_clip_config.json").is_file()
    loaded = CLIPGuide(model_name="ViT-B-32", pretrained=spec)
    img = torch.rand(2, 3, 40, 40) * 2 - 1
    torch.testing.assert_close(loaded.encode_image(img), guide.encode_image(img))
    torch.testing.assert_close(loaded.encode_text(["a cat"]), guide.encode_text(["a cat"]))


def test_weights_file_architecture_mismatch(guide, tmp_path):
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": guide.model.state_dict()}, path)
    with pytest.raises(UserError, match="does not match"):
        CLIPGuide(model_name="ViT-B-32", pretrained=str(path))


def test_local_dir_missing_config(tmp_path):
    with pytest.raises(UserError, match="open_clip_config.json"):
        CLIPGuide(pretrained=f"local-dir:{tmp_path}")


def test_unknown_or_uncached_tag_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="not-a-tag"):
        CLIPGuide(model_name="ViT-B-32", pretrained="not-a-tag")
    with pytest.raises(UserError, match="ViT-B-32/openai"):
        CLIPGuide(model_name="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path))
    with pytest.raises(UserError, match="clip.pretrained is empty"):
        CLIPGuide(pretrained=None)


def test_cached_tag_weights_are_found_without_network(tmp_path):
    from diffedit_lab.guidance.clip import _cached_tag_file
    from tests.utils.test_weights import _fake_hf_cache

    path = _fake_hf_cache(tmp_path, "org/clip-b32", "open_clip_model.safetensors")
    assert _cached_tag_file({"hf_hub": "org/clip-b32/"}, str(tmp_path)) == str(path)
    # like open_clip, the .safetensors alternative of a named .bin is taken first
    assert _cached_tag_file({"hf_hub": "org/clip-b32/open_clip_pytorch_model.bin"}, str(tmp_path)) == str(path)
    other = _fake_hf_cache(tmp_path, "org/clip-l14", "weights.bin")
    assert _cached_tag_file({"hf_hub": "org/clip-l14/weights.bin"}, str(tmp_path)) == str(other)
    assert _cached_tag_file({"hf_hub": "org/missing/"}, str(tmp_path)) is None
    url_file = tmp_path / "ViT-B-32.pt"
    url_file.write_bytes(b"x")
    assert _cached_tag_file({"url": "https://example.invalid/a/ViT-B-32.pt"}, str(tmp_path)) == str(url_file)
