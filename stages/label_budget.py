"""Stage label_budget: frozen pretrained features of every labelled galaxy -> metrics/label_budget/ (learning curve
and its power law, active learning vs random, label issues, near duplicates)."""
from pathlib import Path

import pandas as pd

from galaxy_finetune.core.accelerator import torch_device
from galaxy_finetune.core.classes import read_classes
from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.data.loading import read_split
from galaxy_finetune.core.task import read_task
from galaxy_finetune.labels.budget import budget_sample, label_budget, not_applicable
from galaxy_finetune.labels.features import frozen_features
from galaxy_finetune.training.model_io import read_config


def add_arguments(parser):
    parser.add_argument("raw_dir", type=Path, help="data/raw (the classes)")
    parser.add_argument("store_dir", type=Path, help="data/store")
    parser.add_argument("splits_dir", type=Path, help="data/splits")
    parser.add_argument("encoder_dir", type=Path, help="models/encoder (the frozen, pretrained encoder)")
    parser.add_argument("model_dir", type=Path, help="models/finetuned (model.json: the eval view)")
    parser.add_argument("out_dir", type=Path, help="metrics/label_budget")


def main(args, params):
    task = read_task(args.raw_dir)
    if task.kind != "classification":
        print(f"label_budget: {not_applicable(task.kind, args.out_dir)['note']}: nothing to do")
        return
    labelled = pd.concat([read_split(args.splits_dir, name).assign(split=name) for name in ("train", "val", "test")],
                         ignore_index=True)
    galaxies = budget_sample(labelled, params.labels.max_galaxies)
    if len(galaxies) < len(labelled):
        print(f"label_budget: {len(galaxies)} of the {len(labelled)} labelled galaxies (labels.max_galaxies), each "
              f"split and class keeping its share")
    features = frozen_features(args.encoder_dir, read_config(args.model_dir), args.store_dir, galaxies["row"],
                               params.labels.batch_size, torch_device(params.train.accelerator))
    s = label_budget(galaxies, features, read_classes(args.raw_dir), params.labels, args.out_dir, args.splits_dir,
                     params.analyse.bootstrap_samples, n_labelled=len(labelled))
    need = s["labels_for_target"]
    saving = ", ".join(f"{k} " + ("never reached random's accuracy" if v["label_saving"] is None
                                  else f"{v['label_saving']:.0%}")
                       for k, v in s["active_learning"].items() if k != "random")
    print(f"label_budget ({s['learner']}): {s['metric']} " + ", ".join(f"{k}/class {v:.1%}" for k, v in s["curve"].items())
          + f"; {s['target']:.0%} needs " + (f"{need} labels" if need else f"more than this learner reaches ({s['note']})")
          + f"; label saving at equal accuracy: {saving}; {s['label_issues']['n_flagged']} labels look wrong; "
          f"duplicates {s['duplicates']['exact']} exact, {s['duplicates']['near']} near; "
          f"{sum(s['wall_s'].values()):.1f} s")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
