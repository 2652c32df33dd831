"""params.yaml, validated in one place: every problem is reported at once, before any work starts."""
from __future__ import annotations

from dataclasses import dataclass

import warnings
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from galaxy_finetune.core.classes import DATASET_CLASSES, LIBRARY_INTERNAL, SOURCES, VOTE_SCHEMAS, internal_dataset
from galaxy_finetune.core.errors import PipelineError


@dataclass(frozen=True)
class FitsView:
    """How FITS cutouts become RGB (params: data.fits_bands, data.fits_stretch, data.fits_q).

    bands: which plane of a 3-band cube goes to red, green, blue (0-based, FITS plane order);
    the default (2, 1, 0) puts the reddest band of a blue-to-red cube (g, r, z) in red.
    stretch: the linear range of the asinh stretch, in units of the cutout's 99.5th-percentile intensity.
    q: the asinh softening (larger: more of the faint outskirts visible, the core more compressed).
    """
    bands: tuple[int, int, int] = (2, 1, 0)
    stretch: float = 0.3
    q: float = 3.0

class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# data.schema is the name users write (as Zoobot calls it); it shadows pydantic's deprecated BaseModel.schema()
warnings.filterwarnings("ignore", message='Field name "schema" in "DataParams" shadows', category=UserWarning)


class DataParams(_Group):
    source: str = "galaxy_mnist"  # core.classes.SOURCES: a galaxy-datasets name, galaxy_mnist_64, catalog, synthetic
    local_dir: str = ""
    catalog: str = ""
    unlabelled: str = ""  # more unlabelled galaxies: a folder of images or a catalog with file_loc (train.semi's pool)
    # classification: the classes, label i = classes[i]; for a built-in dataset a subset of its classes in any
    # order, [] (the default) for all of them in the dataset's order; for an own catalog its class names, []
    # for the names its label column holds (sources.catalog_classes: sorted; GalaxyMNIST's keep their order)
    classes: list[str] = Field(default_factory=list)
    synthetic_n_per_class: int = Field(500, gt=0)
    synthetic_image_size: int = Field(64, ge=16)
    synthetic_seed: int = 0
    fits_bands: list[int] = Field(default_factory=lambda: [2, 1, 0])
    fits_stretch: float = Field(0.3, gt=0)
    fits_q: float = Field(3.0, gt=0)
    # train.task regression: the catalog's continuous target columns; votes: optional, the schema gives them
    label_cols: list[str] = Field(default_factory=list)
    # train.task votes: a Zoobot schema's name (zoobot.shared.schemas, e.g. gz2_ortho_schema), or, for an own
    # catalog, question -> its answer count columns; auto: the schema of the galaxy-datasets dataset named by source
    schema: str | dict[str, list[str]] = "auto"

    @model_validator(mode="before")
    @classmethod
    def _own_classes(cls, data):
        """classes [] or left out: a built-in dataset's own classes (so picking demo_rings needs no class list);
        an own catalog's stay [] here: fetch_data reads them from its label column."""
        if isinstance(data, dict) and not data.get("classes"):
            own = DATASET_CLASSES.get(data.get("source", "galaxy_mnist"))
            if isinstance(own, tuple):
                data = {**data, "classes": list(own)}
        return data

    @field_validator("source")
    @classmethod
    def _known_source(cls, source: str) -> str:
        if source in LIBRARY_INTERNAL:
            raise ValueError(internal_dataset(source))
        if source not in SOURCES:
            raise ValueError(f"{source!r} is not a source; use one of {', '.join(SOURCES)}")
        return source

    @model_validator(mode="after")
    def _check(self):
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes has duplicates: {self.classes}")
        if len(self.classes) == 1:
            raise ValueError(f"classes {self.classes}: name at least 2 classes (or [] for a dataset's own)")
        if self.source == "catalog" and not self.catalog:
            raise ValueError("source 'catalog' needs data.catalog: the path of a CSV/parquet catalog")
        if sorted(self.fits_bands) != [0, 1, 2]:
            raise ValueError(f"fits_bands {self.fits_bands}: give the planes for red, green, blue as an order of "
                             f"0, 1, 2 (e.g. [2, 1, 0] for a g,r,z cube)")
        return self

    def fits_view(self) -> FitsView:
        """How decode_image renders FITS cutouts: the data.fits_* keys."""
        return FitsView(tuple(self.fits_bands), self.fits_stretch, self.fits_q)


class FetchParams(_Group):
    offline: Literal["quickstart", "error"] = "quickstart"
    timeout_s: float = Field(60, gt=0)
    retries: int = Field(3, ge=1)


class ModelParams(_Group):
    encoder: str = "hf_hub:mwalmsley/zoobot-encoder-convnext_nano"
    random_arch: str = "convnext_nano"
    seed: int = 42


class SplitParams(_Group):
    seed: int = 42
    val_fraction: float = Field(0.1, gt=0, lt=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    train_per_class: int = Field(0, ge=0)  # > 0: keep this many training galaxies per class (a learning-curve point)

    @model_validator(mode="after")
    def _check(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction + test_fraction must be < 1 to leave a training set")
        return self


class TrainParams(_Group):
    task: Literal["classification", "regression", "votes"] = "classification"  # see core/task.py
    recipe: Literal["lpft", "writeup"] = "lpft"  # for a pretrained encoder: lpft (train.*) | writeup (writeup.*)
    training_mode: Literal["full", "head_only"] = "full"
    lr: float = Field(1e-4, gt=0)
    layer_decay: float = Field(0.75, gt=0, le=1)
    weight_decay: float = Field(0.05, ge=0)
    dropout: float = Field(0.5, ge=0, lt=1)
    batch_size: int = Field(32, gt=0)
    epochs: int = Field(30, gt=0)  # the budget when steps is 0
    steps: int = Field(500, ge=0)  # optimizer steps (0: train for `epochs`); validation 20 times along the way
    patience: int = Field(8, gt=0)  # validations without a better val loss before stopping
    input_size: int = Field(224, ge=32)
    head_init: Literal["linear_probe", "random"] = "linear_probe"
    schedule: Literal["cosine", "constant"] = "cosine"  # cosine: linear warm-up over 5% of the budget, then cosine
    batchnorm: Literal["frozen", "train"] = "frozen"  # frozen: BatchNorm keeps its pretrained running statistics
    seed: int = 42
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    precision: Literal["auto", "32", "bf16-mixed", "16-mixed"] = "auto"
    devices: int | Literal["auto"] = "auto"
    num_nodes: int = Field(1, gt=0)
    strategy: str = "auto"
    resume: Literal["auto", "never"] = "auto"
    majority_margin: float = Field(0.05, ge=0, lt=1)
    # semi-supervised: also learn from data/splits/unlabelled.csv (training/semi.py, docs/recipes.md)
    semi: Literal["none", "fixmatch", "ema_teacher"] = "none"  # none: labels only
    # a pool galaxy's pseudo-label counts at this confidence or more; adaptive: FreeMatch's self-adaptive, per class
    semi_threshold: Annotated[float, Field(ge=0, le=1)] | Literal["adaptive"] = "adaptive"
    semi_weight: float = Field(1.0, ge=0)            # the unlabelled loss's weight beside the labelled loss
    semi_ratio: int = Field(2, gt=0)                 # pool galaxies per labelled galaxy in a training batch
    semi_ema: float = Field(0.99, gt=0, lt=1)        # ema_teacher: the teacher's weight decay per step
    semi_guard: bool = True                          # drop pool galaxies unlike every labelled class (out-of-set)


class AugmentParams(_Group):
    rotation_deg: float = Field(90, ge=0, le=180)
    translate: float = Field(0.1, ge=0, lt=0.5)
    scale_min: float = Field(1.2, gt=0)
    scale_max: float = Field(1.4, gt=0)
    shear_deg: float = Field(10, ge=0, lt=45)
    flip: bool = True
    eval_zoom: float = Field(1.2, gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.scale_min > self.scale_max:
            raise ValueError(f"scale_min ({self.scale_min}) must be <= scale_max ({self.scale_max})")
        return self


# The keys a training recipe sets: train.<key> (lpft), writeup.<key> or scratch.<key>.
RECIPE_KEYS = ("lr", "epochs", "steps", "input_size", "batch_size", "patience", "layer_decay", "head_init", "schedule",
               "batchnorm")


class _RecipeGroup(_Group):
    """A recipe that replaces train.<RECIPE_KEYS>: every key must be given in the subclass."""
    lr: float = Field(gt=0)
    epochs: int = Field(gt=0)
    steps: int = Field(0, ge=0)
    input_size: int = Field(ge=32)
    batch_size: int = Field(gt=0)
    patience: int = Field(gt=0)
    layer_decay: float = Field(gt=0, le=1)
    head_init: Literal["linear_probe", "random"] = "random"
    schedule: Literal["cosine", "constant"] = "constant"
    batchnorm: Literal["frozen", "train"] = "frozen"


class WriteupParams(_RecipeGroup):
    """The reference write-up's recipe (88.85% on GalaxyMNIST): train.recipe: writeup."""
    lr: float = Field(1e-5, gt=0)
    epochs: int = Field(30, gt=0)
    input_size: int = Field(224, ge=32)
    batch_size: int = Field(64, gt=0)
    patience: int = Field(5, gt=0)
    layer_decay: float = Field(0.75, gt=0, le=1)


class ScratchParams(_RecipeGroup):
    """The from-scratch recipe: replaces train.<RECIPE_KEYS> when the encoder is a random init."""
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(10, gt=0)
    input_size: int = Field(64, ge=32)
    batch_size: int = Field(64, gt=0)
    patience: int = Field(3, gt=0)
    layer_decay: float = Field(1.0, gt=0, le=1)
    batchnorm: Literal["frozen", "train"] = "train"  # a random init's statistics are placeholders: they must learn


class StoreParams(_Group):
    image_size: int | Literal["auto"] = "auto"  # auto: the larger recipe input size, capped at the source's size
    threads: int = Field(0, ge=0)  # decode threads; 0: one per core (at most 8)
    loader_workers: int | Literal["auto"] = "auto"  # DataLoader workers reading the store; auto: 4 on GPU, 0 on CPU

    @model_validator(mode="after")
    def _check(self):
        if self.image_size != "auto" and self.image_size < 16:
            raise ValueError(f"image_size must be auto or >= 16, got {self.image_size}")
        return self


class PredictParams(_Group):
    batch_size: int = Field(256, gt=0)


class EmbedParams(_Group):
    batch_size: int = Field(256, gt=0)
    pca_components: int = Field(40, ge=2)


class AnalyseParams(_Group):
    bootstrap_samples: int = Field(1000, ge=10)
    seed: int = 0
    ece_bins: int = Field(15, ge=2)
    anomaly_k: int = Field(10, gt=0)
    map: Literal["pca", "tsne"] = "pca"


class LabelsParams(_Group):
    """The label_budget stage: learning curve, active-learning simulation, label issues, near duplicates."""
    per_class: list[int] = Field(default_factory=lambda: [10, 25, 50, 100, 200, 400], min_length=1)
    seeds: int = Field(3, ge=1)  # orderings of the nested budgets (and active-learning runs)
    metric: Literal["accuracy", "balanced_accuracy"] = "accuracy"
    target: float = Field(0.85, gt=0, lt=1)  # the power law says how many labels reach this metric
    pca_components: int = Field(40, ge=2)  # the probe fits on this PCA of the frozen features (fast; 0.2 s a fit)
    acquisition: list[Literal["entropy", "margin", "bald"]] = Field(default_factory=lambda: ["entropy", "margin",
                                                                                           "bald"])
    al_start_per_class: int = Field(10, ge=1)
    al_batch: int = Field(20, ge=1)
    al_budget: int = Field(200, ge=2)  # 0 < labels the simulation stops at
    mc_passes: int = Field(20, ge=2)  # BALD's Monte-Carlo dropout passes
    issue_folds: int = Field(5, ge=2)  # train_judge probe: its out-of-fold folds
    # who judges the train split's labels (val and test: the fine-tuned model's predictions): dynamics (the
    # fine-tuning run's training dynamics) | probe (out-of-fold probe on pretrained frozen features) | none
    train_judge: Literal["dynamics", "probe", "none"] = "dynamics"
    # cleanlab's find_label_issues filter: fewer flags and a higher share of real ones (confident_learning), or more
    # of the wrong labels among more flags (predicted_neq_given); measured in docs/label-budget.md
    filter_by: Literal["prune_by_noise_rate", "both", "confident_learning", "predicted_neq_given"] = \
        "prune_by_noise_rate"
    # the cosine at which features propose near-copy candidates for the pixel proof; auto: measured on near copies
    # of the run's own galaxies (data/duplicates.py); or a cosine set by hand
    near_duplicate_cosine: Literal["auto"] | Annotated[float, Field(gt=0, le=1)] = "auto"
    batch_size: int = Field(128, gt=0)  # galaxies through the frozen encoder at once
    # at most this many labelled galaxies (a seeded sample keeping each split's and class's share; 0: all): bounds
    # the stage's encoder pass and its pairwise near-duplicate search whatever the catalog's size
    max_galaxies: int = Field(10_000, ge=0)


class Params(_Group):
    data: DataParams = DataParams()
    fetch: FetchParams = FetchParams()
    model: ModelParams = ModelParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    augment: AugmentParams = AugmentParams()
    writeup: WriteupParams = WriteupParams()
    scratch: ScratchParams = ScratchParams()
    store: StoreParams = StoreParams()
    predict: PredictParams = PredictParams()
    embed: EmbedParams = EmbedParams()
    analyse: AnalyseParams = AnalyseParams()
    labels: LabelsParams = LabelsParams()

    @model_validator(mode="after")
    def _task_fits_the_source(self):
        """train.task against data.source: what each dataset can give, one line each."""
        d, task = self.data, self.train.task
        if task == "classification" and d.source in VOTE_SCHEMAS:
            raise ValueError(f"data.source {d.source} gives vote counts, not classes: use train.task votes (or "
                             f"regression with data.label_cols)")
        if task == "regression" and not d.label_cols:
            raise ValueError("train.task regression: set data.label_cols to the target columns")
        if task == "votes" and d.source in DATASET_CLASSES and d.source != "synthetic":
            raise ValueError(f"data.source {d.source} has classes, not votes: use train.task classification")
        if task == "votes" and d.schema == "auto" and d.source not in VOTE_SCHEMAS:
            raise ValueError(f"data.schema auto: {d.source} has no Zoobot schema (only {', '.join(VOTE_SCHEMAS)} do); "
                             f"name one (e.g. gz2_ortho_schema) or give question: [answer count columns]")
        if task != "classification" and d.source == "galaxy_mnist_64":
            raise ValueError("data.source galaxy_mnist_64 has classes only: use train.task classification")
        return self

    def recipe(self, pretrained: bool) -> tuple[str, TrainParams]:
        """(recipe name, training params) for an encoder with or without pretrained weights.

        The name is the params group that holds the recipe's values: "train" (pretrained weights, the default
        lpft recipe), "writeup" (pretrained weights, train.recipe: writeup) or "scratch" (a random init). The
        last two replace the train keys of the same name (RECIPE_KEYS).
        """
        if not pretrained:
            return "scratch", self.train.model_copy(update=self.scratch.model_dump())
        if self.train.recipe == "writeup":
            return "writeup", self.train.model_copy(update=self.writeup.model_dump())
        return "train", self.train

    def largest_input_size(self) -> int:
        """The largest input size of the three recipes: a store this large serves whichever one runs."""
        return max(self.train.input_size, self.writeup.input_size, self.scratch.input_size)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise PipelineError listing every problem on one line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found; run from the project root or pass --params") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (typo?)"
            problems.append(f"{where}: {msg}" if where else msg)  # a check across groups names its keys itself
        raise PipelineError(f"{path}: {len(problems)} problem(s): " + "; ".join(problems)) from None
