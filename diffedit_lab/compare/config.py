"""The comparison's typed config: which methods (entries), on which sources, how many images."""

from __future__ import annotations

from dataclasses import dataclass, field

from diffedit_lab.methods.config import PromptConfig
from diffedit_lab.utils.schema import ConfigError, bounds, target


@dataclass
class EntryConfig:
    """One column of the table: a method config (``sdd``, ``sdedit``, ``sdd/tiny`` …), overrides of its keys
    (``method.strength=0.3``), and trained weights to reuse (``method.weights=…``; null = train what is missing).

    The rest declares how this method is driven, so the comparison needs no knowledge of any method: the keys
    that cap how many images it edits and scores, the stages it runs with and without trained weights, the
    stages whose time is its training cost, and the size it reads the sources at. The defaults fit SDD and the
    baselines; the Rectifier's entry sets its own (``conf/method/compare.yaml``)."""

    method: str = ""
    overrides: list[str] = field(default_factory=list)
    weights: str | None = None
    weights_key: str = "method.weights"  # the method's key for ``weights``
    max_images_keys: list[str] = field(default_factory=lambda: ["method.edit.max_images", "method.eval.max_images"])
    stages: list[str] | None = None  # without weights; null = the method's default sequence
    weights_stages: list[str] = field(default_factory=lambda: ["edit", "eval"])  # with weights
    train_stages: list[str] | None = None  # whose time/<stage>_s is train_s; null = all but edit/eval/compare
    resolution: int | None = field(default=None, metadata=bounds(ge=8))  # read the sources at; null = their size

    def check(self, key: str) -> None:
        if not self.method:
            raise ConfigError(f"{key}.method", self.method, "name a method config, e.g. sdd, sdedit, ddib")
        if not self.weights_stages:
            raise ConfigError(f"{key}.weights_stages", self.weights_stages, "list the stages run with weights")
        if self.stages is not None and not self.stages:
            raise ConfigError(f"{key}.stages", self.stages, "list stages, or null for the method's default")


@dataclass
class CompareConfig:
    target: str = target()
    name: str
    prompt: PromptConfig
    num_images: int = field(metadata=bounds(ge=1))
    folder: str | None  # photos to edit; null = the source entry's generator test images
    source_entry: str | None  # whose edit/original/ images the other entries edit (generator mode)
    source_resolution: int = field(metadata=bounds(ge=8))  # folder mode: size the photos are read at
    figure_images: int = field(metadata=bounds(ge=1))
    entries: dict[str, EntryConfig]
    common: list[str]  # overrides given to every entry (e.g. paths, trainer)

    def check(self, key: str) -> None:
        if not self.entries:
            raise ConfigError(f"{key}.entries", {}, "list at least one method to compare")
        if not self.folder and self.source_entry not in self.entries:  # '' is no folder either (entry_order)
            raise ConfigError(f"{key}.source_entry", self.source_entry,
                              f"without {key}.folder the sources are one entry's test images: one of "
                              f"{sorted(self.entries)}")  # fmt: skip
