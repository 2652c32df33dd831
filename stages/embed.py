"""Stage embed: fine-tuned encoder features of every train/val/test galaxy + their PCA -> data/embeddings/."""
from pathlib import Path

from galaxy_finetune.core.cli import run_stage
from galaxy_finetune.inference.embed import embed_splits


def add_arguments(parser):
    parser.add_argument("model_dir", type=Path, help="models/finetuned")
    parser.add_argument("store_dir", type=Path, help="data/store (the images)")
    parser.add_argument("splits_dir", type=Path, help="data/splits")
    parser.add_argument("embeddings_out", type=Path, help="data/embeddings")


def main(args, params):
    record = embed_splits(args.model_dir, args.store_dir, args.splits_dir, args.embeddings_out,
                          params.embed.batch_size, params.embed.pca_components, params.train.accelerator)
    print(f"embed: {record['galaxies']} galaxies x {record['feature_dim']} features, "
          f"{record['images_per_s']} images/s on {record['accelerator']}; PCA {record['pca_components']} components "
          f"explain {record['pca_explained_variance']:.1%} of the training variance")


if __name__ == "__main__":
    run_stage(__doc__, add_arguments, main)
