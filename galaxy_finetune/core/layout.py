"""The one place that names the files the stages exchange (folders come from dvc.yaml's command lines)."""

# data/raw/ (fetch_data)
CATALOG = "catalog.csv"          # one row per galaxy, in store order
MANIFEST = "manifest.json"       # what was fetched, from where, and what stood in for what was missing
SOURCE = "source.json"           # the fingerprint of the source files: the store is rebuilt when it changes
RECHECK = "recheck.json"         # what the last run read, so the next one sees "nothing changed" cheaply (data/recheck.py)
# data/store/ (store)
STORE_IMAGES = "images.npy"      # (N, S, S, 3) uint8, row i = catalog row i; read through a memory map
STORE_RECORD = "store.json"      # size, count, pixel sha256, the source fingerprint it was built from
STORE_ROW_HASHES = "row_hashes.npy"  # (N, 16) uint8 blake2b of each stored image: exact duplicates
# data/splits/ (split)
SPLIT_DUPLICATES = "duplicates.csv"  # galaxies with identical pixels, and the one split each group went to
POOL = "unlabelled"  # the split named so, data/splits/unlabelled.csv: galaxies without a label (the unlabelled pool)
# models/encoder/ (fetch_data)
ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_RECORD = "encoder.json"
# models/finetuned/ (finetune_gpu)
MODEL_WEIGHTS = "model.safetensors"
MODEL_CONFIG = "model.json"
# metrics/training/ (finetune_gpu's dvclive folder)
TRAINING_TIMING = "timing.json"  # wall_time_s, train_images_per_s: kept out of models/finetuned so that a rerun that
                                 # trains the same weights leaves the model's hash, and what depends on it, unchanged
# data/predictions/ (predict)
TIMING = "timing.json"
# data/embeddings/ (embed)
EMBED_GALAXIES = "galaxies.csv"          # id_str, split, label, label_name, row (store): row i of the arrays below
EMBED_FEATURES = "features.npy"          # (N, D) float16 pooled encoder features
EMBED_PCA_FEATURES = "pca_features.npy"  # (N, K) float32, the train-fitted PCA projection
EMBED_PCA = "pca.npz"                    # mean, components, explained_variance_ratio
EMBED_RECORD = "embed.json"              # counts, dimensions, explained variance, speed
EMBED_SHIFT = "shift.npz"                # the training reference of the shift score, val's scores (inference/shift.py)
# models/checkpoints/ (finetune_gpu's own, for resuming a killed run; not a DVC output)
CHECKPOINT_FINGERPRINT = "fingerprint.json"  # what the checkpoints were trained from, and whether that run finished
CHECKPOINT_INTERRUPTED = "interrupted.ckpt"  # written by OnExceptionCheckpoint when a run is killed
CHECKPOINT_LAST = "last.ckpt"
CHECKPOINT_HPC = "hpc_ckpt_*.ckpt"  # written by Lightning's SLURM support on SIGUSR1 (auto-requeue), numbered
CHECKPOINT_BEST = "best.ckpt"
