"""Stage finetune_gpu: fine-tune Zoobot on the train split (GPU when present) -> models/finetuned/."""
from pathlib import Path

from galaxy_finetune.cli import run_stage
from galaxy_finetune.files import read_json
from galaxy_finetune.layout import MANIFEST
from galaxy_finetune.train import finetune


def add_arguments(parser):
    parser.add_argument("raw_dir", type=Path, help="data/raw (manifest.json: classes, what ran)")
    parser.add_argument("store_dir", type=Path, help="data/store (the decoded images)")
    parser.add_argument("splits_dir", type=Path)
    parser.add_argument("encoder_dir", type=Path)
    parser.add_argument("model_out", type=Path)
    parser.add_argument("--live-dir", type=Path, default=Path("metrics/training"), help="dvclive folder")
    parser.add_argument("--checkpoints", type=Path, default=Path("models/checkpoints"))


def main(args, params):
    manifest = read_json(args.raw_dir / MANIFEST)
    pretrained = manifest["encoder"]["pretrained"]
    train = params.effective_train(pretrained)
    if not pretrained:
        print("finetune_gpu: random encoder, so quickstart.{input_size,epochs,lr,batch_size,patience,layer_decay} "
              f"replace train.*: lr={train.lr} epochs={train.epochs} input_size={train.input_size}")
    run = finetune(train, params.augment, manifest["run_label"], manifest["classes"], args.splits_dir,
                   args.store_dir, args.encoder_dir, args.model_out, args.live_dir, args.checkpoints,
                   params.store.loader_workers)
    if not run:  # a DDP worker process: rank 0 reports and writes the outputs
        return
    print(f"finetune_gpu: {run['epochs_run']} epochs in {run['wall_time_s']} s on {run['device']}, "
          f"best val loss {run['best_val_loss']:.4f} (epoch {run['best_epoch']})")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
