"""SDD (Wang et al., "Not All Steps are Created Equal", 2023) as a LightningModule.

A StyleGAN2 generator G is frozen; a levels mapper M edits W+ codes, ``w' = w + 0.1·M(w)``. Stable Diffusion
supervises M through score distillation at timesteps chosen by the ``select`` stage:

    L = λ_sds · SDS(G(w'), t, prompt) + λ_l2 · MSE(w, w') + λ_id · (1 − cos(ArcFace(G(w)), ArcFace(G(w'))))

The identity term compares the ORIGINAL image G(w) with the EDITED image G(w'). (The released reference code
compares the original image with itself, which makes the term a constant; this is the corrected version.)
At inference an edit costs one mapper and one generator pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from diffedit_lab.diffusion.score_distillation import ScoreDistillation
from diffedit_lab.methods.base import EditingMethod, StageContext
from diffedit_lab.methods.sdd import selection as sel
from diffedit_lab.models.mapper import LevelsMapper
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.instantiate import instantiate
from diffedit_lab.utils.io import atomic_json_dump, save_images

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class SDDModule(EditingMethod):
    STAGES = ("select", "fit", "edit", "eval")
    DEFAULT_STAGES = ("select", "fit", "edit", "eval")

    def __init__(
        self,
        generator: DictConfig,
        teacher: DictConfig,
        prompt: DictConfig,
        mapper: DictConfig,
        codes: DictConfig,
        guidance: DictConfig,
        loss: DictConfig,
        selection: DictConfig,
        fit: DictConfig,
        optim: DictConfig,
        edit: DictConfig,
        eval: DictConfig,
        clip: DictConfig | None = None,
        identity: DictConfig | None = None,
        name: str = "sdd",
        weights: str | None = None,
    ):
        super().__init__()
        # plain containers, so checkpoints hold no OmegaConf objects and load with torch.load(weights_only=True)
        args = dict(
            generator=generator,
            teacher=teacher,
            prompt=prompt,
            mapper=mapper,
            codes=codes,
            guidance=guidance,
            loss=loss,
            selection=selection,
            fit=fit,
            optim=optim,
            edit=edit,
            eval=eval,
            clip=clip,
            identity=identity,
            name=name,
            weights=weights,
        )
        self.save_hyperparameters({k: _plain(v) for k, v in args.items()}, logger=False)
        self.cfg = OmegaConf.create(dict(self.hparams))
        self._trained = False
        if not self.cfg.prompt.get("text"):
            raise UserError('prompt.text is empty: pick a preset (prompt=angry) or set prompt.text="..."')
        gen_domain, prompt_domain = self.cfg.generator.get("domain", "any"), self.cfg.prompt.get("domain", "any")
        if "any" not in (gen_domain, prompt_domain) and gen_domain != prompt_domain:
            raise UserError(
                f"prompt '{self.cfg.prompt.get('name', prompt.text)}' is for the '{prompt_domain}' domain "
                f"but the generator is '{gen_domain}'; choose a matching generator=…"
            )
        style_dim = int(self.cfg.generator.get("style_dim", 512))
        self.mapper = LevelsMapper(
            dim=style_dim,
            levels=dict(self.cfg.mapper.levels),
            num_layers=self.cfg.mapper.num_layers,
            lr_mul=self.cfg.mapper.lr_mul,
            edit_scale=self.cfg.mapper.edit_scale,
        )
        self.selection: sel.Selection | None = None
        self._t_generator = torch.Generator().manual_seed(0)

    # --- frozen components ------------------------------------------------------------------------------------
    @property
    def generator(self):
        return self.component("generator", self.cfg.generator, domain=None)

    @property
    def teacher(self):
        return self.component("teacher", self.cfg.teacher)

    @property
    def sds(self) -> ScoreDistillation:
        if "sds" not in self._frozen:
            g = self.cfg.guidance
            self._frozen["sds"] = ScoreDistillation(
                self.teacher, guidance_scale=g.guidance_scale, weighting=g.weighting, topk=g.topk, noise=g.noise
            )
        return self._frozen["sds"]

    @property
    def identity(self):
        if "identity" not in self._frozen and self.cfg.identity is not None:
            path = self.cfg.identity.get("weights_path")
            if path is not None and not Path(path).expanduser().is_file():
                log.warning(
                    "identity weights not found at %s: identity loss and metric disabled "
                    "(set identity.weights_path to model_ir_se50.pth, or identity=none)",
                    path,
                )
                self._frozen["identity"] = None
        return self.component("identity", self.cfg.identity)

    @property
    def clip(self):
        return self.component("clip", self.cfg.clip)

    # --- codes and images -------------------------------------------------------------------------------------
    def codes_from_batch(self, batch: dict) -> torch.Tensor:
        """W+ codes (B, L, D): given in the batch, or mapped from integer seeds through the generator."""
        if "w" in batch:
            w = batch["w"].to(self.device).float()
            gen = self.generator
            if w.shape[1:] != (gen.n_latent, gen.style_dim):
                raise UserError(
                    f"W+ codes have shape {tuple(w.shape[1:])} but the generator expects "
                    f"({gen.n_latent}, {gen.style_dim})"
                )
            return w
        seeds = [int(s) for s in batch["seed"]]
        with torch.no_grad():
            return self.generator.sample_wplus(
                seeds, truncation=float(self.cfg.codes.truncation), truncation_latent=self.w_avg
            )

    @property
    def w_avg(self) -> torch.Tensor:
        """The truncation centre: the checkpoint's ``latent_avg``, else the mean of 4096 mapped z (computed once)."""
        if self._frozen.get("w_avg") is None or self._frozen["w_avg"].device != self.device:
            gen = self.generator
            avg = gen.latent_avg if gen.latent_avg is not None else gen.mean_latent(4096)
            self._frozen["w_avg"] = avg.reshape(1, -1).to(self.device)
        return self._frozen["w_avg"]

    def synthesize(self, w: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesis(w, noise_mode="const")

    @torch.no_grad()
    def edit_codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(original image, edited image, edited codes) — the method's one-pass inference."""
        w_edit = self.mapper.edit(w)
        return self.synthesize(w), self.synthesize(w_edit), w_edit

    # --- stage: select ----------------------------------------------------------------------------------------
    def selection_key(self) -> str:
        c = self.cfg
        key = {
            "prompt": c.prompt.text,
            "teacher": _plain(c.teacher),
            "generator": _plain(c.generator),
            "grid": list(c.selection.timesteps),
            "n": c.selection.num_codes,
            "guidance": _plain(c.guidance),
            "codes": _plain(c.codes),
            "scan_data": _plain(c.selection.get("scan_data")),  # which codes are scanned (data config)
            "seed": c.selection.get("seed"),
        }
        return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def _cache_file(self, ctx: StageContext) -> Path:
        return ctx.run_dir / "selection" / f"scores_{self.selection_key()}.json"

    def _global_cache_file(self) -> Path | None:
        root = self.cfg.selection.get("cache_dir")
        return Path(root) / f"scores_{self.selection_key()}.json" if root else None

    @torch.no_grad()
    def scan_timesteps(self, codes_iter, timesteps: list[int], num_codes: int, seed: int = 0) -> sel.ScoreTable:
        """Mean entropy / ℓ1 of the image-space SDS gradient at each t over ``num_codes`` generator images."""
        sums = {t: {"entropy": 0.0, "l1": 0.0} for t in timesteps}
        seen = 0
        prompt, neg = self.cfg.prompt.text, self.cfg.guidance.negative_prompt
        for batch_idx, w in enumerate(codes_iter):
            w = w[: num_codes - seen]
            images = self.synthesize(w)
            for t in timesteps:
                g = torch.Generator(device=self.device).manual_seed(seed * 100003 + batch_idx * 1009 + t)
                grad = self.sds.image_gradient(images, t, prompt, neg, generator=g)
                sums[t]["entropy"] += float(sel.gradient_entropy(grad).sum())
                sums[t]["l1"] += float(sel.gradient_l1(grad).sum())
            seen += len(w)
            if seen >= num_codes:
                break
        if seen == 0:
            raise UserError("timestep selection saw no codes: the test split is empty")
        return sel.ScoreTable(
            timesteps=list(timesteps),
            entropy=[sums[t]["entropy"] / seen for t in timesteps],
            l1=[sums[t]["l1"] / seen for t in timesteps],
        )

    def _scan_codes(self, ctx: StageContext):
        """Codes for the scan: seeds/codes of the train split (never the test images), batched."""
        dm = ctx.datamodule
        dm.setup("fit")
        bs = int(self.cfg.selection.batch_size)
        loader = torch.utils.data.DataLoader(dm.train_set, batch_size=bs, shuffle=False)
        for batch in loader:
            yield self.codes_from_batch(batch)

    def stage_select(self, ctx: StageContext) -> dict[str, float]:
        c = self.cfg.selection
        self.to(ctx.device)
        num_t = self.teacher.num_train_timesteps
        for name, ts in (
            ("method.selection.timesteps", list(c.timesteps)),
            ("method.selection.random_range", list(c.random_range)),
        ):
            if not ts or min(ts) < 0 or max(ts) >= num_t:
                raise UserError(f"{name}={ts}: timesteps must lie in [0, {num_t - 1}] for this teacher")
        out_dir = ctx.run_dir / "selection"
        out_dir.mkdir(parents=True, exist_ok=True)
        table = None
        if sel.needs_scan(c.rule) or c.get("always_scan", False):
            table = self._load_cached_table(ctx)
            if table is None:
                t0 = time.perf_counter()
                table = self.scan_timesteps(
                    self._scan_codes(ctx),
                    list(c.timesteps),
                    int(c.num_codes),
                    seed=int(self.cfg.selection.get("seed") or 0),
                )
                log.info(
                    "timestep scan: %d t × %d codes in %.1fs", len(c.timesteps), c.num_codes, time.perf_counter() - t0
                )
                for path in filter(None, [self._cache_file(ctx), self._global_cache_file()]):
                    atomic_json_dump({"key": self.selection_key(), **table.to_dict()}, path)
        self.selection = sel.select(c.rule, table, score=c.score, random_range=tuple(c.random_range))
        if max(self.selection.timesteps) >= num_t:
            raise UserError(
                f"selection rule '{c.rule}' picks t={max(self.selection.timesteps)} but the teacher has "
                f"{num_t} timesteps (0..{num_t - 1})"
            )
        atomic_json_dump(
            {"rule": c.rule, "score": c.score, "prompt": self.cfg.prompt.text, **self.selection.to_dict()}
            | ({"random_range": list(c.random_range)} if c.rule == "random" else {}),
            out_dir / "selected.json",
        )
        metrics: dict[str, float] = {}
        if table is not None:
            table.write_csv(out_dir / "scores.csv")
            table.plot(
                out_dir / "scores.png",
                selected=self.selection.timesteps if self.selection.random_range is None else None,
                title=f"{self.cfg.prompt.text}: {c.score}, rule {c.rule}",
            )
            self._log_image(ctx, "select/scores", out_dir / "scores.png")
            best = max(range(len(table.timesteps)), key=lambda i: table.hqs[i])
            metrics["select/best_hqs_t"] = float(table.timesteps[best])
        metrics["select/num_selected"] = float(len(self.selection.timesteps))
        log.info(
            "selected timesteps (%s on %s): %s",
            c.rule,
            c.score,
            self.selection.random_range or self.selection.timesteps,
        )
        self.write_metrics(ctx, metrics)
        return metrics

    def _load_cached_table(self, ctx: StageContext) -> sel.ScoreTable | None:
        if not self.cfg.selection.cache:
            return None
        for path in filter(None, [self._cache_file(ctx), self._global_cache_file()]):
            if path.is_file():
                log.info("reusing timestep scores from %s", path)
                return sel.ScoreTable.from_dict(json.loads(path.read_text()))
        return None

    def ensure_selection(self, ctx: StageContext) -> sel.Selection:
        if self.selection is None:
            c = self.cfg.selection
            if sel.needs_scan(c.rule) and self._load_cached_table(ctx) is None:
                log.info("no timestep scores cached for this prompt/teacher/generator: running stage select")
            self.stage_select(ctx)
        return self.selection

    # --- stage: fit -------------------------------------------------------------------------------------------
    def configure_optimizers(self):

        return instantiate(self.cfg.optim)(params=self.mapper.parameters())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.selection is None:
            raise UserError("SDD fit needs a timestep selection: run stage select (or use rule=fixed_T/random)")
        w = self.codes_from_batch(batch)
        w_edit = self.mapper.edit(w)
        x_edit = self.synthesize(w_edit)
        t = self.selection.sample(w.shape[0], self._t_generator, weighted=self.cfg.fit.t_sampling == "weighted").to(
            self.device
        )
        out = self.sds(x_edit, t, self.cfg.prompt.text, self.cfg.guidance.negative_prompt)
        lw = self.cfg.loss
        loss_l2 = F.mse_loss(w_edit, w)
        loss = lw.sds * out.loss + lw.latent_l2 * loss_l2
        logs = {
            "train/sds": out.loss.detach(),
            "train/latent_l2": loss_l2.detach(),
            "train/t": t[0].float(),
            "train/noise_mse": out.noise_mse,
        }
        identity = self.identity if lw.identity > 0 else None
        if identity is not None:
            with torch.no_grad():
                x_orig = self.synthesize(w)
            loss_id = identity.loss(x_orig, x_edit)
            loss = loss + lw.identity * loss_id
            logs["train/identity"] = loss_id.detach()
        if not torch.isfinite(loss):
            raise UserError(
                f"non-finite loss at step {self.global_step} ({ {k: float(v) for k, v in logs.items()} });"
                " training stopped, the last good checkpoint is kept in checkpoints/"
            )
        logs["train/loss"] = loss.detach()
        self.log_dict(logs, prog_bar=True, batch_size=w.shape[0])
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sdd_t_rng"] = self._t_generator.get_state()
        if self.selection is not None:
            checkpoint["sdd_selection"] = self.selection.to_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "sdd_t_rng" in checkpoint:
            self._t_generator.set_state(checkpoint["sdd_t_rng"])
        s = checkpoint.get("sdd_selection")
        if s:
            rr = s.get("random_range")
            self.selection = sel.Selection(
                timesteps=list(s["timesteps"]), weights=s.get("weights"), random_range=tuple(rr) if rr else None
            )

    def stage_fit(self, ctx: StageContext) -> dict[str, float]:
        self.ensure_selection(ctx)
        ctx.trainer.fit(self, datamodule=ctx.datamodule, ckpt_path=ctx.ckpt_path)
        self.save_mapper(ctx.run_dir / "mapper.pt")
        self._trained = True
        metrics = {k: float(v) for k, v in ctx.trainer.callback_metrics.items() if k.startswith("train/")}
        if ctx.trainer.is_global_zero:
            self.write_metrics(ctx, metrics)
        return metrics

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop before a non-finite gradient (e.g. from the fp16 teacher) reaches the weights or a checkpoint."""
        for name, p in self.mapper.named_parameters():
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise UserError(
                    f"non-finite gradient in mapper.{name} at step {self.global_step}; training stopped, the last "
                    "good checkpoint is kept in checkpoints/ (try a lower lr or prior.dtype=fp32)"
                )

    def ensure_trained(self, ctx: StageContext) -> None:
        """``edit``/``eval`` without ``fit`` in the same run: load a trained mapper.

        Looked up in order: ``method.weights`` (a ``mapper.pt`` or a Lightning ``.ckpt``), ``ckpt_path`` (``last`` =
        the run dir's ``checkpoints/last.ckpt``), then ``<run dir>/mapper.pt`` (e.g. with ``hydra.run.dir=<old run>``).
        """
        if self._trained:
            return
        ckpt = ctx.ckpt_path
        if ckpt == "last":
            ckpt = ctx.run_dir / "checkpoints" / "last.ckpt"
        candidates = [self.cfg.get("weights"), ckpt, ctx.run_dir / "mapper.pt"]
        path = next((Path(str(c)).expanduser() for c in candidates if c and Path(str(c)).expanduser().is_file()), None)
        if path is None:
            named = [str(c) for c in candidates[:2] if c]
            raise UserError(
                "no trained mapper to edit with"
                + (f" ({', '.join(named)} not found)" if named else "")
                + ": run stage fit first, or pass method.weights=<run>/mapper.pt"
                " (or ckpt_path=<run>/checkpoints/last.ckpt)"
            )
        self.load_mapper(path)
        log.info("loaded the trained mapper from %s", path)

    def load_mapper(self, path: Path) -> None:
        """Load ``mapper.pt`` (from ``save_mapper``) or a Lightning checkpoint of this module, safely."""
        from diffedit_lab.utils.io import load_weights

        obj = load_weights(path, "SDD mapper")
        if "mapper" in obj:
            state, selection, prompt = obj["mapper"], obj.get("selection"), obj.get("prompt")
            scale = obj.get("edit_scale")
        elif "state_dict" in obj:
            state = {k[len("mapper.") :]: v for k, v in obj["state_dict"].items() if k.startswith("mapper.")}
            selection = obj.get("sdd_selection")
            hp = obj.get("hyper_parameters") or {}
            prompt = (hp.get("prompt") or {}).get("text")
            scale = (hp.get("mapper") or {}).get("edit_scale")
        else:
            raise UserError(f"'{path}' is neither a mapper.pt nor a Lightning checkpoint of SDD")
        if prompt is not None and prompt != self.cfg.prompt.text:
            raise UserError(
                f"'{path}' was trained for the prompt '{prompt}' but prompt.text is '{self.cfg.prompt.text}': "
                "use the same prompt (its metrics would be computed against the wrong text)"
            )
        if scale is not None and float(scale) != self.mapper.edit_scale:
            raise UserError(f"'{path}' was trained with method.mapper.edit_scale={scale}, not {self.mapper.edit_scale}")
        try:
            self.mapper.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"'{path}' does not match this mapper (levels/style_dim differ?): {first}") from None
        if selection:
            rr = selection.get("random_range")
            self.selection = sel.Selection(
                timesteps=list(selection["timesteps"]),
                weights=selection.get("weights"),
                random_range=tuple(rr) if rr else None,
            )
        self._trained = True

    def save_mapper(self, path: Path) -> None:
        from diffedit_lab.utils.io import atomic_torch_save

        atomic_torch_save(
            {
                "mapper": self.mapper.state_dict(),
                "levels": self.mapper.levels,
                "edit_scale": self.mapper.edit_scale,
                "prompt": self.cfg.prompt.text,
                "selection": self.selection.to_dict() if self.selection else None,
            },
            path,
        )

    @torch.no_grad()
    def preview_images(self) -> dict[str, torch.Tensor]:
        """Before/after rows on fixed codes, for the image-grid callback."""
        n = int(self.cfg.fit.preview_codes)
        seeds = list(range(10_000_000, 10_000_000 + n))
        w = self.generator.sample_wplus(
            seeds, truncation=float(self.cfg.codes.truncation), truncation_latent=self.w_avg
        )
        before, after, _ = self.edit_codes(w)
        return {"before_after": torch.cat([before, after])}

    # --- stage: edit ------------------------------------------------------------------------------------------
    def _test_codes(self, ctx: StageContext, limit: int | None):
        dm = ctx.datamodule
        dm.setup("test")
        seen = 0
        for batch in dm.test_dataloader():
            w = self.codes_from_batch(batch)
            if limit is not None:
                w = w[: limit - seen]
            if len(w) == 0:
                break
            yield w
            seen += len(w)
            if limit is not None and seen >= limit:
                break

    @torch.no_grad()
    def stage_edit(self, ctx: StageContext) -> dict[str, float]:
        self.ensure_trained(ctx)
        self.to(ctx.device).eval()
        out = ctx.run_dir / "edit"
        befores, afters, latency = [], [], []
        idx = 0
        for w in self._test_codes(ctx, self.cfg.edit.max_images):
            before = self.synthesize(w)
            self._sync()
            t0 = time.perf_counter()
            after = self.synthesize(self.mapper.edit(w))
            self._sync()
            latency.append((time.perf_counter() - t0) / len(w))
            names = [f"{idx + i:05d}.png" for i in range(len(w))]
            save_images(before, [out / "original" / n for n in names])
            save_images(after, [out / "edited" / n for n in names])
            room = int(self.cfg.edit.get("grid_max", 32)) - sum(len(b) for b in befores)
            if room > 0:  # keep only what the grid shows: a full test split at 1024 px would not fit in memory
                befores.append(before[:room].cpu())
                afters.append(after[:room].cpu())
            idx += len(w)
        if idx == 0:
            raise UserError("stage edit found no test codes (data.num_test / the codes file's test split is empty)")
        photos = self.cfg.edit.get("photos")
        if photos:
            pb, pa = self._edit_photos(ctx, photos, out)
            befores.append(pb)
            afters.append(pa)
        grid = self._grid(torch.cat(befores), torch.cat(afters))
        save_images(grid[None], [out / "grid.png"])
        self._log_image(ctx, "edit/before_after", out / "grid.png")
        metrics = {"edit/latency_ms_per_image": 1000 * sum(latency) / len(latency), "edit/num_images": float(idx)}
        log.info("edited %d codes: %.2f ms/image (mapper + generator)", idx, metrics["edit/latency_ms_per_image"])
        self.write_metrics(ctx, metrics)
        return metrics

    def _edit_photos(self, ctx: StageContext, photos_cfg, out: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """Invert real photos with the optimisation projector, then edit their codes."""

        from diffedit_lab.models.projector import project

        dm = instantiate(photos_cfg)
        dm.setup("test")
        befores, afters = [], []
        size = self.generator.output_size if hasattr(self.generator, "output_size") else None
        for batch in dm.test_dataloader():
            images = batch["image"].to(self.device)
            if size is not None and tuple(images.shape[-2:]) != tuple(size):
                images = F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
            with torch.enable_grad():
                w = project(
                    self.generator,
                    images,
                    steps=int(self.cfg.edit.projector_steps),
                    lr=float(self.cfg.edit.projector_lr),
                    progress=False,
                )
            recon, edited, _ = self.edit_codes(w)
            for i, p in enumerate(batch["path"]):
                stem = Path(p).stem
                save_images(images[i : i + 1], [out / "photos" / f"{stem}_input.png"])
                save_images(recon[i : i + 1], [out / "photos" / f"{stem}_inverted.png"])
                save_images(edited[i : i + 1], [out / "photos" / f"{stem}_edited.png"])
            torch.save(w.cpu(), out / "photos" / f"codes_{len(befores):03d}.pt")
            befores.append(recon.cpu())
            afters.append(edited.cpu())
        return torch.cat(befores), torch.cat(afters)

    def _grid(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        from torchvision.utils import make_grid

        cols = int(self.cfg.edit.grid_columns)
        rows = []
        for i in range(0, len(before), cols):
            rows += [before[i : i + cols], after[i : i + cols]]
        tiles = torch.cat([F.pad(r, (0, 0, 0, 0, 0, 0, 0, cols - len(r)), value=-1) for r in rows])
        return make_grid(tiles, nrow=cols, padding=2, pad_value=1.0)

    # --- stage: eval ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def stage_eval(self, ctx: StageContext) -> dict[str, float]:
        from diffedit_lab.evaluation.suite import MetricSuite

        self.to(ctx.device).eval()
        e = self.cfg.eval
        if not (e.get("folder") and e.folder.get("pred")):
            self.ensure_trained(ctx)
        if e.get("folder") and e.folder.get("pred"):
            return self.evaluate_folder(
                ctx,
                e.folder,
                clip=(lambda: self.clip) if "clip_dir" in e.folder.metrics else None,
                identity=(lambda: self.identity) if "identity" in e.folder.metrics else None,
                src_text=self.cfg.prompt.source_text,
                tgt_text=self.cfg.prompt.text,
            )
        wanted = [m for m in e.metrics if m != "latent_l2"]
        if self.identity is None and "identity" in wanted:
            wanted.remove("identity")
        suite = MetricSuite(
            wanted,
            fid_feature=e.fid_feature,
            fid_weights_path=e.fid_weights_path,
            kid_subset_size=min(1000, int(e.max_images or 1000)),
            clip=(lambda: self.clip) if "clip_dir" in wanted else None,
            src_text=self.cfg.prompt.source_text,
            tgt_text=self.cfg.prompt.text,
            identity_encoder=(lambda: self.identity) if "identity" in wanted else None,
        )
        suite.to(self.device)
        l2_sum, n = 0.0, 0
        for w in self._test_codes(ctx, e.max_images):
            before, after, w_edit = self.edit_codes(w)
            suite.update_edit(before, after)
            suite.update_unpaired_fake(after)
            if e.reference_dir is None:
                suite.update_unpaired_real(before)
            l2_sum += float(((w_edit - w) ** 2).mean(dim=(1, 2)).sum())
            n += len(w)
        if e.reference_dir is not None:
            self._feed_reference(suite, Path(e.reference_dir))
        metrics = {f"eval/{k}": float(v) for k, v in suite.compute().items()}
        if "latent_l2" in e.metrics:
            metrics["eval/latent_l2"] = l2_sum / max(n, 1)
        metrics["eval/num_images"] = float(n)
        log.info("eval: %s", {k: round(v, 5) for k, v in metrics.items()})
        self.write_metrics(ctx, metrics)
        return metrics

    def _feed_reference(self, suite, ref_dir: Path) -> None:
        from diffedit_lab.evaluation.folder_eval import list_images, load_image

        files = list_images(ref_dir, "eval.reference_dir")
        size = self.generator.output_size
        batch = []
        for f in files.values():
            img = load_image(f, size)
            if img is not None:
                batch.append(img)
            if len(batch) == 16:
                suite.update_unpaired_real(torch.stack(batch).to(self.device))
                batch = []
        if batch:
            suite.update_unpaired_real(torch.stack(batch).to(self.device))

    # --- helpers ----------------------------------------------------------------------------------------------
    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @staticmethod
    def _log_image(ctx: StageContext, key: str, path: Path) -> None:
        from diffedit_lab.callbacks.image_grid import log_image_file

        log_image_file(ctx.trainer.loggers, key, path, step=ctx.trainer.global_step)
