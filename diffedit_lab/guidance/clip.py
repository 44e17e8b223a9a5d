"""Frozen open_clip model as a differentiable guide: embeddings, directional CLIP loss and CLIP scores.

One wrapper serves both roles CLIP plays in this project: a *loss* (Rectifier stage 2, text-guided
editing, where gradients must reach the image) and a *metric* (directional similarity, CLIP score).
Hence preprocessing is done in torch on [-1, 1] tensors rather than with open_clip's PIL transforms.

Weights come from an open_clip tag (resolved from the local cache first, so offline runs fail fast with a
clear message), a weights file, or open_clip's ``local-dir:`` layout; ``model=`` wraps an open_clip model built
elsewhere. The small random model of tests and the offline demo is built by :mod:`diffedit_lab.testing.clip`
(``clip=tiny``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_json_dump, atomic_write
from diffedit_lab.utils.weights import hf_cached_file, load_weights, missing_weights, offline_mode

LOCAL_DIR = "local-dir:"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WEIGHTS_FILE = "open_clip_model.safetensors"


def directional_cosine(d_img: Tensor, d_txt: Tensor, eps: float = 1e-8) -> Tensor:
    """Cosine between image-embedding and text-embedding directions along the last axis (broadcasts)."""
    return F.cosine_similarity(d_img, d_txt, dim=-1, eps=eps)


def _cached_tag_file(tag_cfg: dict[str, Any], cache_dir: str | None) -> str | None:
    """Path of a tag's weights if already downloaded (HF cache or open_clip's URL cache), else None."""
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        names = [filename]  # open_clip tries a .safetensors alternative first, so do we
        if filename == HF_WEIGHTS_NAME:
            names.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        found = hf_cached_file(repo, names, cache_dir=cache_dir)
        if found:
            return found
    url = tag_cfg.get("url", "")
    if url:
        path = Path(cache_dir or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def _resolve_tag(model_name: str, tag: str, cache_dir: str | None) -> tuple[str, dict[str, Any]]:
    """Checkpoint path and tag config for an open_clip tag; downloads only when online."""
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    tag_cfg = get_pretrained_cfg(model_name, tag)
    if not tag_cfg:
        known = open_clip.list_pretrained_tags_by_model(model_name)
        raise UserError(
            f"clip.pretrained='{tag}' is neither a weights file, 'local-dir:<dir>', nor an open_clip tag of "
            f"'{model_name}' (known tags: {', '.join(known) or 'none'})"
        )
    source = f"open_clip {model_name}/{tag}"
    path = _cached_tag_file(tag_cfg, cache_dir)
    if path is None and offline_mode():
        raise missing_weights(f"CLIP {model_name}", source, hint=_LOCAL_HINT)
    if path is None:
        try:
            path = download_pretrained(tag_cfg, cache_dir=cache_dir)
        except Exception as exc:
            raise missing_weights(f"CLIP {model_name}", source, hint=f"{_LOCAL_HINT} ({exc})") from exc
    return path, tag_cfg


_OPEN_CLIP_RANDOM = "No pretrained weights loaded for model"


@contextlib.contextmanager
def _quiet_root(prefix: str) -> Iterator[None]:
    """Drop the root logger's records starting with ``prefix`` inside the block (open_clip's own "initialized
    randomly" warning, which :func:`~diffedit_lab.models.real_shapes.announce` already says)."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(prefix)

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _random_model(
    model_name: str, pretrained: str | None, precision: str, device: torch.device | str | None
) -> tuple[nn.Module, Any, Any, dict[str, Any]]:
    """(model, mean, std, model config): the released ``model_name`` architecture with seeded random weights."""
    from open_clip.pretrained import get_pretrained_cfg

    from diffedit_lab.models import real_shapes
    from diffedit_lab.utils.rng import seeded

    if model_name.startswith(LOCAL_DIR) or open_clip.get_model_config(model_name) is None:
        raise UserError(
            f"clip.model_name='{model_name}': random_weights=true needs an open_clip model name (e.g. ViT-B-32) "
            "whose architecture open_clip knows"
        )
    tag = pretrained if pretrained and not os.path.isfile(os.path.expanduser(pretrained)) else None
    tag_cfg = (get_pretrained_cfg(model_name, tag) or {}) if tag and not tag.startswith(LOCAL_DIR) else {}
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))
    real_shapes.announce(f"open_clip {model_name}" + (f" ({tag})" if tag_cfg else ""))
    with seeded(real_shapes.RANDOM_WEIGHTS_SEED, device), _quiet_root(_OPEN_CLIP_RANDOM):  # said once, above
        model = open_clip.create_model(
            model_name, pretrained=None, precision=precision, device=device or "cpu", force_quick_gelu=quick_gelu
        )
    model_cfg = dict(open_clip.get_model_config(model_name))
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    return model, tag_cfg.get("mean", CLIP_MEAN), tag_cfg.get("std", CLIP_STD), model_cfg


_LOCAL_HINT = "or set clip.pretrained to a weights file or to 'local-dir:<dir with open_clip_config.json>'"


class CLIPGuide(nn.Module):
    """A frozen open_clip model taking [-1, 1] images of any size, with cached text embeddings.

    ``templates`` (e.g. ``["a photo of a {}."]``) turn each text into several prompts whose normalised
    embeddings are averaged (CLIP's prompt ensembling); leave it empty when prompts are full sentences.

    ``model``: an open_clip model built elsewhere, wrapped as is (``model_name`` then only names its tokenizer,
    ``pretrained``/``precision``/``cache_dir`` are unused); ``model_cfg`` is its open_clip architecture config,
    kept for :func:`save_local_dir`.
    A given ``device`` receives the guide. ``random_weights=True`` (the real-shape switch,
    :mod:`diffedit_lab.models.real_shapes`): open_clip's ``model_name`` architecture (with the ``pretrained`` tag's
    QuickGELU and normalisation) and seeded random weights, one WARNING line, nothing read or downloaded.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        templates: Sequence[str] | None = None,
        precision: str = "fp32",
        cache_dir: str | None = None,
        model: nn.Module | None = None,
        model_cfg: dict[str, Any] | None = None,
        device: torch.device | str | None = None,
        random_weights: bool = False,
    ) -> None:
        super().__init__()
        from diffedit_lab.models import real_shapes

        random = real_shapes.check_flag(random_weights, "clip.random_weights")
        self.templates = list(templates) if templates else ["{}"]
        for t in self.templates:
            if "{}" not in t:
                raise UserError(f"clip.templates entry '{t}' has no '{{}}' placeholder for the text")
        if model is not None:
            tokenizer_name, mean, std = model_name, CLIP_MEAN, CLIP_STD
            self.name = f"{model_name}/custom"
        elif random:
            model, mean, std, model_cfg = _random_model(model_name, pretrained, precision, device)
            tokenizer_name, self.name = model_name, f"{model_name}/random-weights"
        else:
            model, tokenizer_name, mean, std, model_cfg = self._build(model_name, pretrained, precision, cache_dir)
            self.name = f"{model_name}/{pretrained}"
        self.model = model.eval().requires_grad_(False)
        self.model_cfg: dict[str, Any] | None = model_cfg
        self.tokenizer = open_clip.get_tokenizer(tokenizer_name)
        size = self.model.visual.image_size
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, Tensor] = {}
        self.eval()
        if device is not None:
            self.to(device)

    @staticmethod
    def _build(model_name, pretrained, precision, cache_dir):
        """(model, tokenizer name, mean, std, model config) for whichever weight source the config names."""
        if model_name.startswith(LOCAL_DIR) or (pretrained or "").startswith(LOCAL_DIR):
            return _load_local_dir(model_name if model_name.startswith(LOCAL_DIR) else pretrained, precision)
        if not pretrained:
            raise UserError(
                "clip.pretrained is empty: give an open_clip tag (e.g. 'openai'), a weights file, "
                "'local-dir:<dir>', or use clip=tiny for a random test model"
            )
        if open_clip.get_model_config(model_name) is None:
            raise UserError(f"clip.model_name='{model_name}' is not an open_clip model (see open_clip.list_models())")
        if os.path.isfile(os.path.expanduser(pretrained)):
            model = open_clip.create_model(model_name, pretrained=None, precision=precision)
            _load_file(model, os.path.expanduser(pretrained), f"CLIP {model_name} weights")
            return model, model_name, CLIP_MEAN, CLIP_STD, open_clip.get_model_config(model_name)
        path, tag_cfg = _resolve_tag(model_name, pretrained, cache_dir)
        model = open_clip.create_model(
            model_name,
            pretrained=path,
            precision=precision,
            force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)),
        )
        mean, std = tag_cfg.get("mean", CLIP_MEAN), tag_cfg.get("std", CLIP_STD)
        model_cfg = dict(open_clip.get_model_config(model_name))
        if tag_cfg.get("quick_gelu"):
            model_cfg["quick_gelu"] = True
        return model, model_name, mean, std, model_cfg

    # ----------------------------------------------------------------------------------------- images
    def preprocess(self, images: Tensor) -> Tensor:
        """[-1, 1] images → CLIP input: resize shortest side, centre crop, mean/std; differentiable."""
        x = (images.float() + 1) / 2
        th, tw = self.image_size
        h, w = x.shape[-2:]
        if (h, w) != (th, tw):
            scale = max(th / h, tw / w)
            size = (max(th, round(h * scale)), max(tw, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
            top, left = (size[0] - th) // 2, (size[1] - tw) // 2
            x = x[..., top : top + th, left : left + tw]
        return (x - self.mean) / self.std

    def encode_image(self, images: Tensor) -> Tensor:
        """L2-normalised image embeddings (B, D), float32; gradients flow to ``images``."""
        pixels = self.preprocess(images).to(self.mean.device, self._dtype)
        return F.normalize(self.model.encode_image(pixels).float(), dim=-1)

    # ------------------------------------------------------------------------------------------- text
    @torch.no_grad()
    def encode_text(self, texts: Sequence[str] | str) -> Tensor:
        """L2-normalised text embeddings (N, D); template-averaged and cached per text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            prompts = [tpl.format(t) for t in missing for tpl in self.templates]
            tokens = self.tokenizer(prompts).to(self.mean.device)
            emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            emb = F.normalize(emb.view(len(missing), len(self.templates), -1).mean(1), dim=-1)
            self._text_cache.update(zip(missing, emb.cpu()))
        return torch.stack([self._text_cache[t] for t in texts]).to(self.mean.device)

    # ----------------------------------------------------------------------------------- losses/metrics
    def directional_similarity(
        self,
        src_images: Tensor,
        tgt_images: Tensor,
        src_text: str | Sequence[str],
        tgt_text: str | Sequence[str],
    ) -> Tensor:
        """(B,) cos(E(tgt) − E(src), T(tgt) − T(src)); one text or one per sample."""
        d_img = self.encode_image(tgt_images) - self.encode_image(src_images)
        d_txt = self.encode_text(tgt_text) - self.encode_text(src_text)
        return directional_cosine(d_img, d_txt)

    def directional_loss(
        self,
        src_images: Tensor,
        tgt_images: Tensor,
        src_text: str | Sequence[str],
        tgt_text: str | Sequence[str],
    ) -> Tensor:
        """Scalar mean(1 − directional cosine): the DiffusionCLIP / StyleGAN-NADA edit-direction loss."""
        return (1 - self.directional_similarity(src_images, tgt_images, src_text, tgt_text)).mean()

    def clip_score(self, images: Tensor, texts: str | Sequence[str]) -> Tensor:
        """(B,) plain cosine between image and text embeddings (×100 gives the usual "CLIP score")."""
        return (self.encode_image(images) * self.encode_text(texts)).sum(-1)

    # --------------------------------------------------------------------------------------- plumbing
    @property
    def _dtype(self) -> torch.dtype:
        return self.model.visual.conv1.weight.dtype if hasattr(self.model.visual, "conv1") else torch.float32

    def train(self, mode: bool = True) -> CLIPGuide:
        """Stay in eval mode: the guide is frozen even inside a module that is training."""
        return super().train(False)


def _load_file(model: nn.Module, path: str, what: str) -> None:
    """Load a plain/DDP/'state_dict'-wrapped open_clip checkpoint, with a one-line error on mismatch."""
    from open_clip.convert import convert_state_dict

    state = load_weights(path, what, expected="an open_clip state dict (optionally under 'state_dict')")
    if not isinstance(state, dict):
        raise UserError(f"{what}: '{path}' holds a {type(state).__name__}, not an open_clip state dict")
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(convert_state_dict(model, state), strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)[:200]]
        raise UserError(f"{what}: '{path}' does not match the model architecture: {first[0].strip()}") from exc


def _load_local_dir(spec: str, precision: str):
    """Load through open_clip's own ``local-dir:`` schema (config + weights in one folder)."""
    directory = Path(spec[len(LOCAL_DIR) :]).expanduser()
    config = directory / "open_clip_config.json"
    if not config.is_file():
        raise UserError(
            f"CLIP local dir '{directory}' must contain open_clip_config.json (with 'model_cfg') and a "
            f"weights file such as {WEIGHTS_FILE} (see diffedit_lab.guidance.clip.save_local_dir)"
        )
    try:
        model = open_clip.create_model(f"{LOCAL_DIR}{directory}", precision=precision, require_pretrained=True)
    except Exception as exc:
        raise UserError(f"cannot load CLIP from '{LOCAL_DIR}{directory}': {type(exc).__name__}: {exc}") from exc
    saved = json.loads(config.read_text())
    pre = saved.get("preprocess_cfg", {})
    mean, std = pre.get("mean", CLIP_MEAN), pre.get("std", CLIP_STD)
    return model, f"{LOCAL_DIR}{directory}", mean, std, saved.get("model_cfg")


def save_local_dir(guide: CLIPGuide, directory: str | os.PathLike, model_cfg: dict[str, Any] | None = None) -> str:
    """Write ``guide`` in open_clip's local-dir layout and return the ``local-dir:`` string that loads it.

    ``model_cfg`` (open_clip's architecture config) defaults to the guide's own, known for every model built
    from a tag, a weights file, a local dir or the tiny test model.
    """
    from safetensors.torch import save_file

    model_cfg = model_cfg or guide.model_cfg
    if not model_cfg:
        raise UserError(f"save_local_dir: the architecture config of CLIP '{guide.name}' is unknown; pass model_cfg")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": guide.mean.flatten().tolist(), "std": guide.std.flatten().tolist()},
    }
    atomic_json_dump(cfg, directory / "open_clip_config.json")
    state = {k: v.detach().contiguous() for k, v in guide.model.state_dict().items()}
    atomic_write(directory / WEIGHTS_FILE, lambda tmp: save_file(state, tmp))
    return f"{LOCAL_DIR}{directory}"
