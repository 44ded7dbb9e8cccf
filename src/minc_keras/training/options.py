"""Training options: :class:`TrainOptions` (the model and its training) and :class:`RunControl`.

Each option is written once, here: its default, and in the field's ``metadata`` what the
command line needs to offer it (``flag``, ``help``, and ``type``, ``choices``, ``metavar``,
``flags`` or ``shortcut`` where the default way does not fit). ``minc_keras.cli.parser``
generates the flags of ``run`` and ``train`` from these fields; a field without a ``flag``
gets none generated (``seed`` is the data options' flag, ``builder`` is Python only).
``TrainOptions`` is what ``model/config.json`` records (with the model file name, which a
resumed training writes to again); ``RunControl`` is how one call runs (clobber, resume,
quiet, the model file name), which is not part of the model.
"""

# Over the ~400-line guide: one field per option with its flag and help text, by design the
# one place they are written; splitting it would split that one source.

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from minc_keras.core.errors import UsageError
from minc_keras.core.layout import DEFAULT_MODEL_NAME
from minc_keras.training.recipes import RECIPES

#: Help groups of the generated flags, in the order the help shows them.
GROUPS = {
    "model": "model and training (the workshop's flags)",
    "schedule": "recipes and training schedule",
}


def comma_ints(text: str) -> list[int]:
    """Comma-separated integers, brackets and spaces allowed.

    >>> comma_ints("[16, 32]")
    [16, 32]
    """
    try:
        values = [int(v) for v in text.replace(" ", "").strip("[]").split(",") if v]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError("expected at least one integer")
    return values


def comma_names(text: str) -> list[str]:
    """Comma-separated names, each stripped.

    >>> comma_names("background, GM,WM")
    ['background', 'GM', 'WM']
    """
    return [name.strip() for name in text.split(",")]


def comma_views(text: str) -> list[str]:
    """Comma-separated view names, empty ones left out.

    >>> comma_views("axial, coronal,")
    ['axial', 'coronal']
    """
    return [view.strip() for view in text.split(",") if view.strip()]


def _cli(flag: str, help: str | None = None, group: str = "model", **more: Any) -> dict:
    """A field's ``metadata``: how the command line offers it (see the module's docstring)."""
    return {"flag": flag, "help": help, "group": group, **more}


@dataclass
class TrainOptions:
    """Model and training options; the defaults are the workshop's.

    ``time_budget`` (minutes, all views together) stops training when it is spent, even
    before ``epochs``; ``schedule`` is ``"constant"`` or ``"cosine"`` (a short warm-up,
    then cosine decay of the learning rate over the epochs or the time budget);
    ``augment`` perturbs the training slices (:class:`~minc_keras.data.augment.SliceAugmenter`);
    ``augment_atrophy`` also enlarges the darkest tissue class (the ventricles of a T1
    scan) in some of them, as in older brains (:func:`~minc_keras.data.augment.expand_class`);
    ``oversample_rare`` shows the training slices that hold the rarest foreground class
    (the ventricles) twice per epoch; ``precision="bfloat16"`` computes in bfloat16 with
    float32 weights (the saved model predicts in float32 on a CPU without bfloat16);
    ``"float16"`` likewise in float16 with loss scaling (GPUs); ``"mixed"`` picks float16
    on a GPU, bfloat16 on a CPU with native bfloat16, float32 otherwise. ``devices`` > 1
    trains data-parallel over that many devices (Keras' distribution API, JAX backend).
    ``calibrate`` fits a probability offset per class on the validation scans once
    training ends and stores it in the model (:mod:`minc_keras.training.calibration`).
    ``jit_compile`` compiles each slice view's training step before it trains
    (:mod:`minc_keras.training.compilation`); the compiling counts against
    ``time_budget``. ``shared_views`` trains one network on the slices of all ``views``
    (their batches interleaved) for the whole budget, instead of one network per view
    for its share; each view's model file then holds that network. ``builder``, a
    function ``builder(input_shape, num_classes) -> keras.Model``, replaces the zoo's
    network with the user's own.

    ``recipe`` records the recipe the options were made from (:meth:`from_recipe`); it
    is not an argument: ``TrainOptions.from_recipe("default")`` makes the options of
    the default recipe.

    Examples
    --------
    >>> TrainOptions().model_type, TrainOptions.from_recipe("fast", epochs=3).epochs
    ('model_0_0', 3)
    """

    model_type: str = field(
        default="model_0_0",
        metadata=_cli(
            flag="--model-type",
            help="network: model_0_0 .. model_4_0, custom, dil, unet (default model_0_0)",
        ),
    )
    epochs: int = field(
        default=10, metadata=_cli(flag="--epochs", type=int, help="training epochs (default 10)")
    )
    batch_size: int = field(
        default=1,
        metadata=_cli(
            flag="--batch-size", type=int, help="slices per batch (default 1, the workshop's)"
        ),
    )
    lr: float = field(
        default=1e-4,
        metadata=_cli(flag="--lr", type=float, help="Adam learning rate (default 1e-4)"),
    )
    loss: str = field(
        default="categorical_crossentropy",
        metadata=_cli(
            flag="--loss",
            help="categorical_crossentropy, binary_crossentropy, dice, dice_ce, dice_wce (Dice + "
            "class-balanced cross-entropy)",
        ),
    )
    metric: str = field(
        default="categorical_accuracy", metadata=_cli(flag="--metric", help="accuracy metric")
    )
    activation_hidden: str = field(default="relu", metadata=_cli(flag="--activation-hidden"))
    activation_output: str = field(default="softmax", metadata=_cli(flag="--activation-output"))
    nK: list[int] | None = field(
        default=None,
        metadata=_cli(
            flag="--nK", type=comma_ints, help="kernels per layer for custom/dil, e.g. 16,32,64,128"
        ),
    )
    n_dil: list[int] | None = field(
        default=None,
        metadata=_cli(
            flag="--n-dil",
            flags=("--n_dil", "--n-dil"),
            type=comma_ints,
            help="dilation rate per layer for custom, e.g. 1,2,4",
        ),
    )
    kernel_size: int | None = field(
        default=None,
        metadata=_cli(flag="--kernel-size", type=int, help="kernel size for custom (default 3)"),
    )
    drop_out: float | None = field(
        default=None,
        metadata=_cli(flag="--drop-out", type=float, help="dropout rate for custom (default 0)"),
    )
    input_stride: int = field(
        default=1,
        metadata=_cli(
            flag="--input-stride",
            type=int,
            help="unet: fold each NxN block of pixels into channels so the network runs at 1/N "
            "resolution and predicts every pixel of the block (2 trains faster on a CPU; "
            "default 1)",
        ),
    )
    refine_filters: int = field(
        default=0,
        metadata=_cli(
            flag="--refine-filters",
            type=int,
            help="unet: filters of a head at full resolution that corrects the class scores from "
            "them and the input slice, for sharper boundaries after --input-stride (default 0: "
            "none)",
        ),
    )
    pad: int = field(
        default=0,
        metadata=_cli(
            flag="--pad",
            type=int,
            help="pad slices to a multiple of 2^PAD (default 0; the U-Nets pad to the "
            "multiple they need by themselves)",
        ),
    )
    views: list[str] = field(
        default_factory=lambda: ["axial"],
        metadata=_cli(
            flag="--views",
            type=comma_views,
            help="train one model per view, e.g. axial,coronal,sagittal; prediction averages them "
            "(default axial; a 3-D --model-type unet3d takes whole volumes: volume)",
        ),
    )
    class_names: list[str] | None = field(
        default=None,
        metadata=_cli(
            flag="--class-names",
            type=comma_names,
            help="a name per label value in ascending order, e.g. background,CSF,GM,WM (default "
            "label_1, label_2, ...)",
        ),
    )
    label_table: str | None = field(
        default=None,
        metadata=_cli(
            flag="--label-table",
            metavar="FILE.tsv",
            help="a tab-separated table naming the label codes (columns index and name, like "
            "a BIDS dseg.tsv): the class names, and the left/right pairs a flip swaps",
        ),
    )
    seed: int = 0  # its flag is the data options' --seed (the split's seed too)
    time_budget: float | None = field(
        default=None,
        metadata=_cli(
            flag="--time-budget",
            group="schedule",
            type=float,
            metavar="MINUTES",
            help="stop training when this many minutes are spent (all views together), keeping "
            "the best checkpoint",
        ),
    )
    schedule: str = field(
        default="constant",
        metadata=_cli(
            flag="--schedule",
            group="schedule",
            choices=("constant", "cosine"),
            help="learning rate: constant, or warm-up then cosine decay over the epochs or the "
            "time budget (default constant)",
        ),
    )
    precision: str = field(
        default="float32",
        metadata=_cli(
            flag="--precision",
            group="schedule",
            choices=("float32", "bfloat16", "float16", "mixed"),
            shortcut=("--mixed-precision", "mixed", "the same as --precision mixed"),
            help="float32 (default); bfloat16 or float16 compute with 16-bit activations and "
            "float32 weights (bfloat16: CPUs with AVX-512 BF16 or AMX; float16: GPUs); mixed picks "
            "float16 on a GPU, bfloat16 on a CPU that has it, float32 otherwise",
        ),
    )
    jit_compile: bool = field(
        default=False,
        metadata=_cli(
            flag="--jit-compile",
            group="schedule",
            help="compile each slice view's training step with torch.compile before it trains "
            "(PyTorch backend, a C++ compiler on a CPU): faster steps after 0.5-1.5 minutes of "
            "compiling per view, which count against --time-budget; eager with a warning where "
            "compiling fails (default off; on in --recipe default)",
        ),
    )
    augment: bool = field(
        default=False,
        metadata=_cli(
            flag="--augment",
            group="schedule",
            help="random flips, rotations, scaling, gamma, bias field and noise on the training "
            "slices (default off)",
        ),
    )
    augment_atrophy: bool = field(
        default=False,
        metadata=_cli(
            flag="--augment-atrophy",
            group="schedule",
            help="also enlarge the darkest tissue class (the ventricles of a T1 scan) by 1-6 "
            "voxels in 30 %% of the training slices, pushing the tissue around it aside, as in "
            "older brains (default off)",
        ),
    )
    oversample_rare: bool = field(
        default=False,
        metadata=_cli(
            flag="--oversample-rare",
            group="schedule",
            help="show the training slices that hold the rarest tissue class (the ventricles of "
            "tissue labels) twice per epoch (default off)",
        ),
    )
    shared_views: bool = field(
        default=False,
        metadata=_cli(
            flag="--shared-views",
            group="schedule",
            help="train one network on the slices of every view (their batches interleaved) for "
            "the whole time budget, instead of one network per view for its share; prediction "
            "still runs it along every view (default off)",
        ),
    )
    calibrate: bool = field(
        default=False,
        metadata=_cli(
            flag="--calibrate",
            group="schedule",
            help="once trained, fit a probability offset per class that maximises Dice on the "
            "validation scans and store it in the model, for every prediction (corrects the "
            "over-segmentation of small classes that class-weighted losses give; default off)",
        ),
    )
    devices: int = field(
        default=1,
        metadata=_cli(
            flag="--devices",
            group="schedule",
            type=int,
            help="train data-parallel over this many devices, e.g. GPUs (JAX backend: "
            "KERAS_BACKEND=jax; default 1)",
        ),
    )
    builder: Callable | None = field(default=None, repr=False)
    recipe: str | None = field(default=None, init=False)

    @classmethod
    def from_recipe(cls, name: str | None, **given: Any) -> TrainOptions:
        """The options of recipe ``name`` (``None``: the defaults), ``given`` values winning.

        Raises
        ------
        UsageError
            If ``name`` is not a recipe of :data:`~minc_keras.training.recipes.RECIPES`.

        Examples
        --------
        >>> options = TrainOptions.from_recipe("default", lr=5e-4)
        >>> options.model_type, options.lr, options.recipe
        ('unet', 0.0005, 'default')
        """
        if name is None:
            return cls(**given)
        if name not in RECIPES:
            raise UsageError(f"`recipe` {name} is not known; choose one of {', '.join(RECIPES)}")
        options = cls(**{**RECIPES[name].options(), **given})
        options.recipe = name
        return options

    @classmethod
    def from_config(cls, saved: dict[str, Any], *, builder: Callable | None = None) -> TrainOptions:
        """The options a ``model/config.json`` records; keys it does not know are left out.

        >>> TrainOptions.from_config({"epochs": 3, "clobber": True, "recipe": "fast"}).recipe
        'fast'
        """
        known = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "builder"}
        options = cls(**{k: v for k, v in saved.items() if k in known}, builder=builder)
        options.recipe = saved.get("recipe")
        return options

    def config(self) -> dict[str, Any]:
        """What ``model/config.json`` records: every option but the ``builder``.

        >>> "builder" in TrainOptions().config(), TrainOptions().config()["epochs"]
        (False, 10)
        """
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "builder"
        }

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with ``changes`` (the recipe it came from kept).

        >>> TrainOptions.from_recipe("fast").replace(epochs=2).recipe
        'fast'
        """
        options = dataclasses.replace(self, **changes)
        options.recipe = self.recipe
        return options

    def check_counts(self) -> None:
        """Refuse counts below 1 (``epochs``, ``batch_size``, ``devices``).

        >>> TrainOptions(epochs=0).check_counts()
        Traceback (most recent call last):
        ...
        minc_keras.core.errors.UsageError: `epochs` 0 is below 1; give a whole number of 1 or more
        """
        for name in ("epochs", "batch_size", "devices"):
            value = getattr(self, name)
            if value < 1:
                raise UsageError(f"`{name}` {value} is below 1; give a whole number of 1 or more")


@dataclass(frozen=True)
class RunControl:
    """How one call of :func:`~minc_keras.training.trainer.train` runs; not a model option.

    ``clobber`` retrains over an existing model (else it is kept, as in the workshop);
    ``resume`` continues an interrupted training from its last checkpoints, with the
    options it was started with (``model/config.json``); ``make_model_only`` builds and
    saves the untrained model; ``model_name`` names the model file under ``TARGET/model``.
    """

    model_name: str = field(
        default=DEFAULT_MODEL_NAME,
        metadata=_cli(
            flag="--model", help="model file name under TARGET/model (default model.keras)"
        ),
    )
    make_model_only: bool = field(
        default=False,
        metadata=_cli(
            flag="--make-model-only",
            action="store_true",
            help="build and save the untrained model, print its size, stop",
        ),
    )
    resume: bool = field(
        default=False,
        metadata=_cli(
            flag="--resume",
            group="schedule",
            action="store_true",
            help="continue an interrupted training from its last checkpoint, with the settings it "
            "was started with (other model flags are ignored)",
        ),
    )
    clobber: bool = False  # its flag is the data options' --clobber
    quiet: bool = False  # its flag is the common --quiet

    def __post_init__(self) -> None:
        if self.resume and self.clobber:
            raise UsageError(
                "`resume` continues a training and `clobber` starts it again; give one of them"
            )
