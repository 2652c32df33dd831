"""fetch_data: every external input (the galaxies and the pretrained encoder), each replaced only if missing.

The stage reruns on every `dvc repro` (the network may have come back), so it is cheap: it reads the
catalog, stats each source file and asks the HF cache for the encoder's revision, and writes nothing
when that fingerprint matches the last run's. Decoding the pixels is the store stage's job.

What can be had is always used: a catalog, files in data.local_dir or a cached download. What cannot is
replaced, and the manifest says so in words: missing galaxies -> the synthetic galaxies, missing weights
-> a random init of the same architecture (and training then uses the from-scratch recipe).
"""
from __future__ import annotations

import os
from pathlib import Path

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.files import atomic_path, read_json, write_csv, write_json
from galaxy_finetune.core.layout import CATALOG, ENCODER_RECORD, MANIFEST, RECHECK, SOURCE
from galaxy_finetune.core.params import Params
from galaxy_finetune.core.task import Task, named_schema_questions
from galaxy_finetune.data import sources, witness, zoo
from galaxy_finetune.data.download import Unreachable
from galaxy_finetune.data.encoder import encoder_identity, encoder_paths, resolve_encoder

DATA_NAMES = {"galaxy_mnist": "GalaxyMNIST", "galaxy_mnist_64": "GalaxyMNIST (64 px release)",
              "catalog": "own catalog", "synthetic": "synthetic galaxies",
              **{name: f"galaxy-datasets {name}" for name in zoo.PUBLIC if name != "galaxy_mnist"}}


def cache_dir() -> Path:
    """Downloads live outside the repo so reruns, clones and experiments never fetch twice."""
    if os.environ.get("GALAXY_FINETUNE_CACHE"):
        return Path(os.environ["GALAXY_FINETUNE_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "galaxy-finetune"


def run_task(params: Params, raw: sources.RawData | None = None) -> Task:
    """The run's Task (source.json "task"): train.task with what it learns from.

    classification: the classes of `raw` (after data.classes picked them), else data.classes; regression:
    data.label_cols; votes: the questions of data.schema, auto being the dataset's Zoobot schema (zoo.SCHEMAS),
    a name one of zoobot.shared.schemas, a dict question -> [answer count columns] an own catalog's."""
    d, kind = params.data, params.train.task
    if kind == "classification":
        return Task(kind, tuple(raw.classes) if raw is not None else tuple(d.classes))
    if kind == "regression":
        if not d.label_cols:
            raise PipelineError("train.task regression: set data.label_cols to the target columns")
        return Task(kind, label_cols=tuple(d.label_cols))
    schema = schema_name(params)
    if isinstance(schema, str):
        questions = named_schema_questions(schema)
    elif schema:
        questions = {q: tuple(answers) for q, answers in schema.items()}
    else:
        raise PipelineError(f"data.schema auto: {d.source} has no Zoobot schema; name one (e.g. gz2_ortho_schema) "
                            f"or give question: [answer count columns]")
    task = Task(kind, questions=questions)
    if d.label_cols and tuple(d.label_cols) != task.label_cols:
        raise PipelineError("data.label_cols: leave it empty for train.task votes (data.schema names the answer "
                            "count columns)")
    return task


def schema_name(params: Params) -> str | dict | None:
    """data.schema with auto resolved: the vote dataset's Zoobot schema name (None when it has none)."""
    d = params.data
    return zoo.SCHEMAS.get(d.source) if d.schema == "auto" else d.schema


def load_source(params: Params, cache: Path, task: Task | None = None) -> sources.RawData:
    """data.source's galaxies, and data.unlabelled's as unlabelled ones: raises Unreachable when the source's files
    can be neither found nor downloaded."""
    task = task or run_task(params)
    raw = _load_source(params, cache, task)
    return sources.add_unlabelled(raw, params.data.unlabelled, task) if params.data.unlabelled else raw


def _load_source(params: Params, cache: Path, task: Task) -> sources.RawData:
    d, f = params.data, params.fetch
    if d.source == "catalog":
        return sources.user_catalog(d.catalog, d.classes, task)
    if d.source == "synthetic":
        return synthetic_galaxies(params, cache, task)
    if d.source == "galaxy_mnist_64":
        raw = sources.galaxy_mnist_64(cache / "galaxy_mnist_64", d.local_dir, f.timeout_s, f.retries)
    else:
        raw = zoo.dataset(d.source, task, cache / d.source, d.local_dir, f.timeout_s, f.retries)
    return sources.select_classes(raw, d.classes, DATA_NAMES[d.source]) if task.by_class else raw


def synthetic_galaxies(params: Params, cache: Path, task: Task | None = None) -> sources.RawData:
    """The synthetic galaxies for the run's task (the source, or the offline stand-in).

    classification: the classes data.classes names; a dataset whose classes the synthetic galaxies lack (demo_rings,
    tidal) gets as many of their shapes, named after its classes (the record says which shape stands for which).
    regression / votes: each galaxy's targets drawn from its shape (synthetic.synthetic_fractions / synthetic_votes)."""
    from galaxy_finetune.data import synthetic as generator

    d = params.data
    task = task or run_task(params)
    raw = sources.synthetic(d.synthetic_n_per_class, d.synthetic_image_size, d.synthetic_seed, cache)
    name = DATA_NAMES["synthetic"]
    if task.by_class:
        if d.source == "synthetic" or set(d.classes) <= set(raw.classes):
            return sources.select_classes(raw, d.classes, name)
        if len(d.classes) > len(raw.classes):
            raise PipelineError(f"data.classes: the synthetic stand-in draws at most {len(raw.classes)} classes, "
                                f"got {len(d.classes)}; put {d.source}'s files in data.local_dir")
        shapes = dict(zip(d.classes, raw.classes))
        catalog = raw.catalog[raw.catalog["label"] < len(d.classes)].reset_index(drop=True)
        return sources.RawData(catalog, tuple(d.classes), record={**raw.record, "shapes": shapes})
    shapes = raw.catalog["label"].to_numpy()
    if task.questions:  # votes: counts over each question's answers
        targets = generator.synthetic_votes(shapes, task.questions, d.synthetic_seed)
        schema = schema_name(params)
        what = f"synthetic vote counts over {schema if isinstance(schema, str) else 'the questions of data.schema'}"
    else:
        targets = generator.synthetic_fractions(shapes, task.label_cols, d.synthetic_seed)
        what = f"synthetic values in [0, 1] for {list(task.label_cols)}"
    catalog = raw.catalog.assign(label=-1, **targets)
    return sources.RawData(catalog, (), record={**raw.record, "targets": f"{what}, drawn from each galaxy's shape"})


def arch_name(arch: str) -> str:
    """timm's convnext_nano -> ConvNeXt-Nano, for the words a reader sees."""
    family, _, size = arch.partition("_")
    return f"ConvNeXt-{size.capitalize()}" if family == "convnext" and size else arch


def run_label(data_description: str, encoder: dict) -> str:
    """'own catalog, 400 galaxies | no pretraining: random ConvNeXt-Nano': which data, which weights."""
    return f"{data_description} | {encoder['description']}"


def fetch_data(params: Params, raw_out: Path, encoder_out: Path, cache: Path | None = None,
               params_file: Path | None = None) -> dict:
    """Write data/raw/ (catalog.csv, source.json, manifest.json, recheck.json) and models/encoder/ if anything
    changed; return the manifest. `params_file`: the params.yaml `params` came from (the stage's), so the next run's
    recheck can read its parameters without validating the file (data/witness.py)."""
    cache = cache or cache_dir()
    d, m = params.data, params.model
    raw = data_missing = identity = encoder_missing = None
    unreachable = []  # the hosts a stand-in could not reach: the next run's recheck asks them again
    task = run_task(params)  # a bad schema name or label_cols is one line before anything is fetched
    try:
        raw = load_source(params, cache, task)
    except Unreachable as exc:
        data_missing = str(exc)
        unreachable.append(exc.host)
    spec = m.encoder
    try:
        identity = encoder_identity(spec, m.random_arch, m.seed)
    except Unreachable as exc:
        encoder_missing, spec = str(exc), "random"
        unreachable.append(exc.host)
    missing = [p for p in (data_missing, encoder_missing) if p]
    if missing and params.fetch.offline == "error":
        raise PipelineError("; ".join(missing) + ". fetch.offline is 'error': put the official files in "
                            "data.local_dir, or set fetch.offline: quickstart")
    substitutions, data_substituted = [], data_missing is not None
    if data_substituted:
        raw = synthetic_galaxies(params, cache, task)
        targets = f" ({raw.record['targets']})" if "targets" in raw.record else ""
        substitutions.append(f"data: {data_missing}; using {len(raw.catalog)} synthetic galaxies{targets} instead")
    if encoder_missing:
        identity = encoder_identity("random", m.random_arch, m.seed)
        substitutions.append(f"{encoder_missing}; using a random {arch_name(m.random_arch)} (no pretraining) instead")

    task = run_task(params, raw)
    catalog = sources.canonical_catalog(raw, task)
    source = {"source": "synthetic" if data_substituted else d.source, "classes": list(raw.classes),
              "task": task.record(), "record": raw.record}
    if task.questions and isinstance(schema_name(params), str):
        source["schema"] = schema_name(params)  # the Zoobot schema the questions are from
    source["fingerprint"] = sources.source_fingerprint(catalog, source)
    previous_source = _read_if_there(raw_out / SOURCE)
    previous_encoder = _read_if_there(encoder_out / ENCODER_RECORD)
    manifest_path = raw_out / MANIFEST
    # what this run read, for the next run's cheap recheck (data/witness.py): the own catalog, and where the real
    # inputs would appear when they stood in
    read = ([str(d.catalog)] if d.source == "catalog" else []) + ([d.unlabelled] if d.unlabelled else [])
    if data_substituted:
        read += [d.local_dir] * bool(d.local_dir) + [str(cache / d.source)]
    seen = witness.witness(witness.read_params_file(params_file) if params_file else params, catalog["src"], read + encoder_paths(m.encoder),
                              [h for h in unreachable if h], identity)
    if (previous_source.get("fingerprint") == source["fingerprint"] and previous_encoder.get("identity") == identity
            and (raw_out / CATALOG).is_file() and manifest_path.is_file()):
        manifest = read_json(manifest_path)
        print(f"fetch_data: nothing changed since the last run (fingerprint {source['fingerprint'][:12]}): "
              f"nothing copied")
        if _read_if_there(raw_out / RECHECK) != seen:
            write_json(raw_out / RECHECK, seen)  # the code or the environment changed, not the data
        witness.announce(manifest)
        return manifest

    # every check that needs nothing but the catalog, before the store decodes any image: a class too small to
    # split (a typo'd label, say) is one line now, not hours later
    task.check_splittable(catalog, raw.record.get("catalog") or DATA_NAMES[source["source"]])
    if previous_encoder.get("identity") == identity:
        encoder = previous_encoder
    else:
        with atomic_path(encoder_out) as tmp:
            encoder = resolve_encoder(spec, tmp, m.random_arch, m.seed, validate=spec != "random")
            pretrained = spec != "random"
            encoder.update(identity=identity, pretrained=pretrained, description=(
                f"pretrained: {spec}" if pretrained else f"no pretraining: random {arch_name(encoder['arch'])}"))
            write_json(tmp / ENCODER_RECORD, encoder)
    description = f"{DATA_NAMES[source['source']]}, {len(catalog)} galaxies"
    if data_substituted:
        description = f"SYNTHETIC stand-in for {DATA_NAMES[d.source]}, {len(catalog)} galaxies"
    manifest = {
        "run_label": run_label(description, encoder),
        "substitutions": substitutions,
        "requested": {"source": d.source, "encoder": m.encoder},
        "source": source["source"],
        "n_images": len(catalog),
        "n_unlabelled": int(task.unlabelled(catalog).sum()),  # empty labels: the pool of semi-supervised training
        "counts_per_class": catalog["label_name"].value_counts().reindex(source["classes"]).astype(int).to_dict(),
        "counts_per_split": {k or "none": int(v) for k, v in catalog["split"].value_counts().items()},
        "data_fingerprint": source["fingerprint"],
        "data": {**raw.record, "substituted": data_substituted, "description": description},
        "encoder": encoder,
    }
    if not task.by_class:  # no classes: the task and each target's mean instead
        manifest.update(task=task.kind, target_means={c: round(float(catalog[c].mean()), 6) for c in task.label_cols})
    with atomic_path(raw_out) as tmp:
        tmp.mkdir()
        write_csv(tmp / CATALOG, catalog)
        write_json(tmp / SOURCE, source)
        write_json(tmp / MANIFEST, manifest)
        write_json(tmp / RECHECK, seen)
    witness.announce(manifest)
    return manifest


def _read_if_there(path: Path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}
