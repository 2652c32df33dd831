"""Reading one galaxy image file into pixels: the only place that decodes image files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from galaxy_finetune.errors import PipelineError


def decode_image(path: str | Path, size: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 pixels of an image file, resized (bilinear) to size x size when `size` is given."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            return np.asarray(img)
    except Exception as exc:
        raise PipelineError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None
