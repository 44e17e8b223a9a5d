"""diffedit_lab: diffusion-based image editing methods (SDD, SDFT, Rectifier) in Lightning + Hydra."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``from diffedit_lab import load_pipeline`` without importing torch at ``import diffedit_lab``."""
    if name in ("load_pipeline", "EditPipeline", "EditOutput"):
        from diffedit_lab import pipelines

        return getattr(pipelines, name)
    raise AttributeError(f"module 'diffedit_lab' has no attribute {name!r}")
