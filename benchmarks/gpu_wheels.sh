#!/usr/bin/env bash
# The wheels benchmarks/gpu_check.py needs on the GPU box, for its Python 3.12 (x86-64), into .whl/ at the
# repo root (git-ignored; carried with the run). The box has torch, lightning, timm, torchmetrics, pandas,
# scikit-learn, scipy, pillow, pyyaml, requests, tqdm and huggingface-hub, but not these:
#   zoobot           the classifier (pure Python; its import of zoobot.shared.schemas needs galaxy-datasets)
#   galaxy-datasets  imported by zoobot (pure Python; needs only pandas, requests and tqdm at import)
#   pydantic (+ pydantic-core, annotated-types, typing-inspection, and typing-extensions >= 4.16 for it)
#                    galaxy_finetune.core.params
# dvc, dvclive and astropy are not needed: the check never imports them (tests/test_gpu_check.py makes sure).
# Versions are those of requirements.txt's install (the project's venv); the script warns if they differ.
#
#   bash benchmarks/gpu_wheels.sh        # then carry .whl (docs/gpu.md, "GPU check")
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(zoobot==2.9.0 galaxy-datasets==0.0.25 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 typing-extensions==4.16.0)
PYTHON=${PYTHON:-python3}

# the pins against the packages installed here (if any): a mismatch means this list wants updating
"$PYTHON" - "${WHEELS[@]}" <<'EOF' || true
import sys
from importlib.metadata import PackageNotFoundError, version
for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        continue
    if have != wanted:
        print(f"warning: {name} is {have} here but {wanted} in gpu_wheels.sh", file=sys.stderr)
EOF

rm -rf .whl
mkdir .whl
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
ls -1 .whl
du -sh .whl
