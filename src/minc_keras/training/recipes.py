"""Named sets of training defaults: ``--recipe workshop | default | fast``.

A recipe fills in every model and training flag the user did not give; a flag given on the
command line always wins. ``workshop`` is the seed workshop's defaults (also what you get
with no recipe). ``default`` is the accurate recipe for tissue segmentation on a CPU: a
U-Net sized for two cores (its levels run at half resolution, ``input_stride`` 2, which
takes 1.6x more steps in the same minutes than the full-resolution U-Net of the same
arithmetic), batches of 8 slices (1.8x the updates of batches of 16 in the same minutes),
Dice + class-balanced cross-entropy (``dice_wce``: the small ventricles are learnt early,
so a slower CPU with fewer steps still learns them), augmentation, simulated atrophy
(``augment_atrophy``: trained on the young dev subjects alone, the models labelled most of
an enlarged ventricle GM), a cosine learning rate over a fixed time budget, three views
averaged at prediction, learnt by one network trained on the slices of all three for the
whole budget (``shared_views``: on folds 1-2, the same Dice on the dev scans as three
networks of 6 minutes each, and +0.03 on the ventricles of atrophied copies), class
offsets fitted on the validation scans and atrophied copies of them (``calibrate``: the
class-balanced loss makes the ventricles too large; the offsets shrink them back, without
assuming every brain's are as small as the dev subjects'), and training steps compiled
with ``torch.compile`` (``jit_compile``: about a minute of compiling per slice size, then
1.35x faster steps for the rest of the budget). ``fast`` is the
same idea for one view in a quarter of the time, eager: its 4 minutes would not repay the
compiling. Neither uses the full-resolution head of ``refine_filters``: it slows each
step, and over 5 folds on a faster CPU ``fast`` without it was as accurate. The runs that
chose these values are in ``benchmarks/README.md``.
"""

from __future__ import annotations

from minc_keras.core.errors import UsageError

#: Flag defaults per recipe, by argparse destination name.
RECIPES: dict[str, dict[str, object]] = {
    "workshop": {
        "model_type": "model_0_0", "input_stride": 1, "refine_filters": 0, "epochs": 10,
        "batch_size": 1, "lr": 1e-4, "loss": "categorical_crossentropy", "pad": 0,
        "views": ["axial"], "time_budget": None, "schedule": "constant", "augment": False,
        "augment_atrophy": False, "oversample_rare": False, "shared_views": False,
        "calibrate": False,
        "jit_compile": False,
    },
    "default": {
        "model_type": "unet", "nK": [16], "input_stride": 2, "refine_filters": 0,
        "epochs": 1000, "batch_size": 8, "lr": 2e-3, "loss": "dice_wce", "pad": 3,
        "views": ["axial", "coronal", "sagittal"],
        "time_budget": 18.0, "schedule": "cosine", "augment": True,
        "augment_atrophy": True, "oversample_rare": False, "shared_views": True,
        "calibrate": True,
        "jit_compile": True,
    },
    "fast": {
        "model_type": "unet", "nK": [16], "input_stride": 2, "refine_filters": 0,
        "epochs": 1000, "batch_size": 8, "lr": 2e-3, "loss": "dice_wce", "pad": 3,
        "views": ["axial"],
        "time_budget": 4.0, "schedule": "cosine", "augment": True,
        "augment_atrophy": True, "oversample_rare": False, "shared_views": False,
        "calibrate": True,
        "jit_compile": False,
    },
}


def recipe_defaults(name: str | None) -> dict[str, object]:
    """The flag defaults of recipe ``name`` (``None``: no recipe, nothing to change).

    >>> recipe_defaults("fast")["views"]
    ['axial']
    >>> recipe_defaults(None)
    {}
    """
    if name is None:
        return {}
    if name not in RECIPES:
        raise UsageError(f"--recipe {name} is not known; choose one of {', '.join(RECIPES)}")
    return {key: (list(value) if isinstance(value, list) else value)
            for key, value in RECIPES[name].items()}
