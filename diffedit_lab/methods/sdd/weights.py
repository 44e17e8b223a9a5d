"""SDD's exported weights: ``mapper.safetensors`` (the mapper's tensors; its levels, edit scale, prompt and timestep
selection in the artifact's config), and loading a mapper back from it, from an old ``mapper.pt`` or from a
Lightning checkpoint of the ``fit`` stage — safely, with the prompt checked."""

from __future__ import annotations

from pathlib import Path

from diffedit_lab.methods.sdd import selection as sel
from diffedit_lab.utils.artifacts import load_artifact, save_artifact
from diffedit_lab.utils.errors import UserError

EXPORT = "mapper.safetensors"


def save_mapper(module, path: Path) -> Path:
    return save_artifact(
        path,
        module.mapper.state_dict(),
        {
            "method": "sdd",
            "levels": list(module.mapper.levels),
            "edit_scale": float(module.mapper.edit_scale),
            "prompt": module.cfg.prompt.text,
            "selection": module.selection.to_dict() if module.selection else None,
        },
    )


def load_mapper(module, path: Path) -> None:
    """Load an SDD export (``mapper.safetensors`` or an old ``mapper.pt``) or a Lightning checkpoint of SDD."""
    art = load_artifact(
        path,
        "SDD mapper",
        expected="a mapper.safetensors written by the fit stage or a Lightning checkpoint of SDD",
        legacy_state_key="mapper",
    )
    if art.kind == "checkpoint":
        state = {k[len("mapper.") :]: v for k, v in art.state.items() if k.startswith("mapper.")}
        hp = art.config.get("hyper_parameters") or {}
        selection, prompt = art.config.get("sdd_selection"), (hp.get("prompt") or {}).get("text")
        scale = (hp.get("mapper") or {}).get("edit_scale")
    else:
        state, selection = art.state, art.config.get("selection")
        prompt, scale = art.config.get("prompt"), art.config.get("edit_scale")
    if not state:
        raise UserError(f"'{path}' is neither an SDD mapper export nor a Lightning checkpoint of SDD")
    text = module.cfg.prompt.text
    if prompt is not None and prompt != text:
        raise UserError(
            f"'{path}' was trained for the prompt '{prompt}' but prompt.text is '{text}': "
            "use the same prompt (its metrics would be computed against the wrong text)"
        )
    if scale is not None and float(scale) != module.mapper.edit_scale:
        raise UserError(f"'{path}' was trained with method.mapper.edit_scale={scale}, not {module.mapper.edit_scale}")
    try:
        module.mapper.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise UserError(f"'{path}' does not match this mapper (levels/style_dim differ?): {first}") from None
    if selection:
        module.selection = sel.Selection.from_dict(selection)
