"""SDD's exported weights: ``mapper.pt`` (mapper + levels + edit scale + prompt + selection), and loading a mapper
back from it or from a Lightning checkpoint of the ``fit`` stage — safely, with the prompt checked."""

from __future__ import annotations

from pathlib import Path

from diffedit_lab.methods.sdd import selection as sel
from diffedit_lab.utils.errors import UserError
from diffedit_lab.utils.io import atomic_torch_save, load_weights


def save_mapper(module, path: Path) -> None:
    atomic_torch_save(
        {
            "mapper": module.mapper.state_dict(),
            "levels": module.mapper.levels,
            "edit_scale": module.mapper.edit_scale,
            "prompt": module.cfg.prompt.text,
            "selection": module.selection.to_dict() if module.selection else None,
        },
        path,
    )


def load_mapper(module, path: Path) -> None:
    """Load ``mapper.pt`` (from ``save_mapper``) or a Lightning checkpoint of SDD into ``module``."""
    obj = load_weights(
        path, "SDD mapper", expected="a mapper.pt written by the fit stage or a Lightning checkpoint of SDD"
    )
    if not isinstance(obj, dict):
        raise UserError(
            f"'{path}' is neither a mapper.pt nor a Lightning checkpoint of SDD (it holds a {type(obj).__name__})"
        )
    if "mapper" in obj:
        state, selection, prompt, scale = obj["mapper"], obj.get("selection"), obj.get("prompt"), obj.get("edit_scale")
    elif "state_dict" in obj:
        state = {k[len("mapper.") :]: v for k, v in obj["state_dict"].items() if k.startswith("mapper.")}
        selection = obj.get("sdd_selection")
        hp = obj.get("hyper_parameters") or {}
        prompt = (hp.get("prompt") or {}).get("text")
        scale = (hp.get("mapper") or {}).get("edit_scale")
    else:
        raise UserError(f"'{path}' is neither a mapper.pt nor a Lightning checkpoint of SDD")
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
