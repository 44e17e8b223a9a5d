"""ArcFace IR-SE50 identity encoder: checkpoint layout, loading, the pSp face-crop convention, the loss."""

import pytest
import torch
import torch.nn.functional as F

from diffedit_lab.models.identity import IdentityEncoder, IRSEBackbone, build_identity
from diffedit_lab.testing.identity import IRSE_TINY, tiny_identity
from diffedit_lab.utils.errors import UserError


def _randomise_batchnorm(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics, so a reload that dropped them would change the embeddings."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    enc = tiny_identity(seed=0)
    _randomise_batchnorm(enc.backbone)
    path = tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth"
    torch.save(enc.backbone.state_dict(), path)  # bare state_dict, as model_ir_se50.pth is distributed
    return enc, path


def _faces(n=2, size=64, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_full_size_layout_matches_model_ir_se50():
    # Key names and shapes of model_ir_se50.pth (TreB1eN InsightFace_Pytorch, pSp models/encoders/helpers.py):
    # res_layer = [BN, conv3x3, PReLU, conv3x3(stride), BN, SE] so SE is index 5; 3+4+14+3 = 24 body units.
    sd = IRSEBackbone().state_dict()
    expected_shapes = {
        "input_layer.0.weight": (64, 3, 3, 3),
        "input_layer.2.weight": (64,),  # PReLU
        "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1),
        "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),  # first unit of stage 2 projects 64 -> 128
        "body.23.res_layer.5.fc2.weight": (512, 32, 1, 1),
        "output_layer.3.weight": (512, 512 * 7 * 7),
        "output_layer.4.weight": (512,),  # affine BatchNorm1d, as pSp builds it (Backbone default affine=True)
    }
    for key, shape in expected_shapes.items():
        assert tuple(sd[key].shape) == shape, key
    assert "body.24.res_layer.0.weight" not in sd
    assert "body.1.shortcut_layer.0.weight" not in sd  # same-width units use a parameter-free max-pool
    # Parameter count of IR-SE50 with the 112x112 output layer: 43.8M (30.95M of it outside output_layer).
    n_params = sum(p.numel() for p in IRSEBackbone().parameters())
    assert n_params == 43_797_696


def test_tiny_checkpoint_reloads_with_identical_embeddings(tiny_ckpt):
    enc, path = tiny_ckpt
    reloaded = IdentityEncoder(str(path), config=IRSE_TINY)
    x = _faces()
    assert torch.equal(enc(x), reloaded(x))
    assert torch.equal(tiny_identity(str(path))(x), enc(x))
    assert not torch.allclose(enc(x), tiny_identity(seed=1)(x))  # a fresh random one differs


def test_checkpoint_without_batchnorm_counters_and_with_module_prefix(tiny_ckpt, tmp_path):
    enc, _ = tiny_ckpt
    old = {f"module.{k}": v for k, v in enc.backbone.state_dict().items() if "num_batches_tracked" not in k}
    path = tmp_path / "old.pth"
    torch.save(old, path)
    x = _faces()
    assert torch.equal(IdentityEncoder(path, config=IRSE_TINY)(x), enc(x))


def test_missing_and_wrong_checkpoints_are_one_line_user_errors(tmp_path, tiny_ckpt):
    with pytest.raises(UserError, match="model_ir_se50.pth.*identity.weights_path") as err:
        IdentityEncoder(tmp_path / "nope.pth", config=IRSE_TINY)
    assert "\n" not in str(err.value)
    _, tiny_path = tiny_ckpt
    with pytest.raises(UserError, match="not an ArcFace IR-SE50 checkpoint"):
        IdentityEncoder(tiny_path)  # tiny weights into the full-size model


def test_similarity_loss_and_normalisation():
    enc = tiny_identity()
    x, y = _faces(3, seed=1), _faces(3, seed=2)
    assert torch.allclose(enc(x).norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(enc.similarity(x, x), torch.ones(3), atol=1e-5)
    expected = F.cosine_similarity(enc(x), enc(y), dim=1)
    assert torch.allclose(enc.similarity(x, y), expected, atol=1e-6)
    assert torch.allclose(enc.loss(x, y), (1 - expected).mean(), atol=1e-6)
    assert enc.loss(x, x).abs() < 1e-5


def test_face_crop_convention_by_hand():
    enc = tiny_identity()
    x = _faces(1, size=256)
    by_hand = enc.backbone(F.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], 112))
    assert torch.allclose(enc(x), by_hand, atol=1e-6)
    # Pixels outside the crop do not matter; one just inside it does.
    for r, c in [(34, 100), (223, 100), (100, 31), (100, 220), (0, 0), (255, 255)]:
        marked = x.clone()
        marked[:, :, r, c] = 5.0
        assert torch.equal(enc(marked), enc(x)), (r, c)
    inside = x.clone()
    inside[:, :, 35, 32] = 5.0
    assert not torch.allclose(enc(inside), enc(x))
    # A 1024 px image is average-pooled 4x4 to 256 first (StyleCLIP), so its pixel replica embeds the same.
    big = x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    assert torch.allclose(enc(big), enc(x), atol=1e-5)


def test_frozen_eval_but_gradient_reaches_input():
    enc = tiny_identity()
    enc.train()  # must stay in eval mode: BatchNorm statistics are pretrained
    assert not enc.training and not any(m.training for m in enc.modules())
    assert not any(p.requires_grad for p in enc.parameters())
    x = _faces(2, size=32).requires_grad_(True)
    enc.loss(x, _faces(2, size=32, seed=3)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_build_identity_switches_off_without_weights(tiny_ckpt):
    _, path = tiny_ckpt
    assert build_identity(enabled=False) is None
    assert build_identity(weights_path=None) is None
    with pytest.raises(UserError, match="not an ArcFace IR-SE50 checkpoint"):
        build_identity(str(path))  # the production builder is the full-size IR-SE50
    assert isinstance(tiny_identity(), IdentityEncoder)
    assert isinstance(tiny_identity(str(path)), IdentityEncoder)
    assert tiny_identity(str(path), enabled=False) is None
