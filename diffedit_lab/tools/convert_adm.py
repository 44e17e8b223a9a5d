"""Command line: convert a guided-diffusion (ADM) checkpoint into a diffusers ``UNet2DModel`` folder.

    python -m diffedit_lab.tools.convert_adm --checkpoint ffhq_p2.pt --out weights/adm-ffhq-256

The defaults are the flags of SDFT's FFHQ-256 source model, so that checkpoint needs no other option.
Flags use guided-diffusion's names (dashes or underscores), and booleans accept ``--flag``, ``--flag True`` or
``--flag False``, so a guided-diffusion command line can be pasted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from diffedit_lab.models.adm_convert import ADMConfig, convert_checkpoint
from diffedit_lab.utils.errors import UserError


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "y"):
        return True
    if text.lower() in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got '{text}'")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x.strip())


def parser() -> argparse.ArgumentParser:
    d = ADMConfig()
    p = argparse.ArgumentParser(
        prog="python -m diffedit_lab.tools.convert_adm",
        description="Convert an openai/guided-diffusion UNetModel checkpoint to a diffusers UNet2DModel "
        "folder (defaults: the light ADM FFHQ-256 model used by SDFT).",
    )
    p.add_argument("--checkpoint", required=True, help="ADM .pt state_dict (e.g. ffhq_p2.pt)")
    p.add_argument("--out", required=True, help="output folder for UNet2DModel.from_pretrained")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")

    def opt(name: str, **kw) -> None:
        p.add_argument(f"--{name}", f"--{name.replace('-', '_')}", **kw)

    def flag(name: str, default: bool, help: str) -> None:
        opt(
            name,
            type=_bool,
            nargs="?",
            const=True,
            default=default,
            metavar="BOOL",
            help=f"{help} ({default})",
        )

    opt("image-size", type=int, default=d.image_size)
    opt("num-channels", type=int, default=d.num_channels)
    opt("num-res-blocks", type=int, default=d.num_res_blocks)
    opt(
        "channel-mult",
        type=_floats,
        default=None,
        help="e.g. 1,1,2,2,4,4 (default: ADM's for the image size)",
    )
    opt("attention-resolutions", type=_ints, default=d.attention_resolutions, help="e.g. 32,16,8 (16)")
    opt("num-heads", type=int, default=d.num_heads)
    opt("num-head-channels", type=int, default=d.num_head_channels, help="-1: use --num-heads")
    opt("num-heads-upsample", type=int, default=d.num_heads_upsample)
    opt("dropout", type=float, default=d.dropout, help="stored in the config; active only in training")
    opt("norm-num-groups", type=int, default=d.norm_num_groups, help="32 for every guided-diffusion model")
    opt("diffusion-steps", type=int, default=d.diffusion_steps, help="for scheduler_config.json")
    opt(
        "noise-schedule",
        default=d.noise_schedule,
        choices=("linear", "cosine"),
        help="for scheduler_config.json",
    )
    flag("learn-sigma", d.learn_sigma, "6 output channels: epsilon and variance interpolation")
    flag("use-scale-shift-norm", d.use_scale_shift_norm, "FiLM-style time conditioning")
    flag("resblock-updown", d.resblock_updown, "residual blocks for up/down-sampling")
    flag("use-new-attention-order", d.use_new_attention_order, "QKVAttention instead of QKVAttentionLegacy")
    flag("class-cond", d.class_cond, "class-conditional model (not supported)")
    flag("use-fp16", False, "accepted for compatibility; weights are converted to float32")
    return p


def config_from_args(args: argparse.Namespace) -> ADMConfig:
    return ADMConfig(
        image_size=args.image_size,
        num_channels=args.num_channels,
        num_res_blocks=args.num_res_blocks,
        channel_mult=args.channel_mult or None,
        attention_resolutions=args.attention_resolutions,
        num_heads=args.num_heads,
        num_head_channels=args.num_head_channels,
        num_heads_upsample=args.num_heads_upsample,
        learn_sigma=args.learn_sigma,
        use_scale_shift_norm=args.use_scale_shift_norm,
        resblock_updown=args.resblock_updown,
        use_new_attention_order=args.use_new_attention_order,
        class_cond=args.class_cond,
        dropout=args.dropout,
        norm_num_groups=args.norm_num_groups,
        diffusion_steps=args.diffusion_steps,
        noise_schedule=args.noise_schedule,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the conversion; returns 0, or 2 after printing a one-line ``error:`` message."""
    args = parser().parse_args(argv)
    try:
        convert_checkpoint(args.checkpoint, args.out, config_from_args(args), overwrite=args.overwrite)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote diffusers UNet2DModel to {args.out} (load with UNet2DModel.from_pretrained)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
