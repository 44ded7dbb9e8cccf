"""Named sets of training options: ``workshop``, ``default`` and ``fast``.

A recipe fills in every model and training option the user did not give; a value given
always wins (:meth:`minc_keras.training.options.TrainOptions.from_recipe`, and ``--recipe``
on the command line). ``workshop`` is the seed workshop's defaults, which are the defaults
of :class:`~minc_keras.training.options.TrainOptions` (also what you get with no recipe).
``default`` is the accurate recipe for tissue segmentation on a CPU: a U-Net sized for two
cores (its levels run at half resolution, ``input_stride`` 2, which takes more steps in the
same minutes than the full-resolution U-Net of the same arithmetic), batches of 8 slices,
Dice + class-balanced cross-entropy (``dice_wce``: the small ventricles are learnt early,
so a slower CPU with fewer steps still learns them), augmentation, simulated atrophy
(``augment_atrophy``: trained on the young dev subjects alone, the models labelled most of
an enlarged ventricle GM), a cosine learning rate over a fixed time budget, three views
averaged at prediction, learnt by one network trained on the slices of all three for the
whole budget (``shared_views``), class offsets fitted on the validation scans and
atrophied copies of them (``calibrate``: the class-balanced loss makes the ventricles too
large; the offsets shrink them back, without assuming every brain's are as small as the
dev subjects'), and training steps compiled with ``torch.compile`` (``jit_compile``: some
compiling per slice size, then faster steps for the rest of the budget). ``fast`` is the
same idea for one view in a quarter of the time, eager: its few minutes would not repay
the compiling. Neither uses the full-resolution head of ``refine_filters``: it slows each
step, and ``fast`` without it was as accurate. The runs that chose these values, and what
each choice measured, are in ``benchmarks/README.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """A named set of training option values.

    Parameters
    ----------
    name : str
        How ``--recipe`` and :meth:`~minc_keras.training.options.TrainOptions.from_recipe`
        name it.
    summary : str
        What it is for, in a few words (the ``--recipe`` help is made of these).
    values : mapping
        Option values by :class:`~minc_keras.training.options.TrainOptions` field name;
        the options it leaves out keep their defaults.
    """

    name: str
    summary: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType(dict(self.values)))

    def options(self) -> dict[str, Any]:
        """A fresh copy of the values (lists copied, so a caller may change them).

        >>> RECIPES["fast"].options()["views"]
        ['axial']
        >>> RECIPES["workshop"].options()
        {}
        """
        return {key: (list(value) if isinstance(value, list) else value)
                for key, value in self.values.items()}


_CPU_UNET = {"model_type": "unet", "nK": [16], "input_stride": 2, "refine_filters": 0,
             "epochs": 1000, "batch_size": 8, "lr": 2e-3, "loss": "dice_wce", "pad": 3,
             "schedule": "cosine", "augment": True, "augment_atrophy": True,
             "oversample_rare": False, "calibrate": True}

#: Every recipe, by name.
RECIPES: dict[str, Recipe] = {recipe.name: recipe for recipe in (
    Recipe("workshop", "the workshop's, also the defaults with no recipe"),
    Recipe("default", "accurate 3-view U-Net in about 20 min on a CPU, recommended",
           {**_CPU_UNET, "views": ["axial", "coronal", "sagittal"], "time_budget": 18.0,
            "shared_views": True, "jit_compile": True}),
    Recipe("fast", "one view, about 5 min",
           {**_CPU_UNET, "views": ["axial"], "time_budget": 4.0, "shared_views": False,
            "jit_compile": False}),
)}
