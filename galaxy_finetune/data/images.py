"""Reading one galaxy image file into pixels: the only place that decodes image files.

JPEG, PNG and the other formats Pillow reads come in as RGB. FITS cutouts (.fits, .fit, .fits.gz, ...;
recognised by their content, not their name) are rendered with astropy: one band becomes a greyscale
image repeated to 3 channels, three bands an RGB composite, both through Lupton et al.'s asinh stretch
(astropy.visualization.make_lupton_rgb). Each cutout is first divided by its 99.5th-percentile intensity,
so the stretch is in units of the galaxy's bright core whatever the survey's flux units.

NaN or infinite pixels (off-footprint edges) are filled with 0 (black) with a FitsWarning naming the file;
a cutout with no finite pixel, or with a band count other than 1 or 3, is an error naming the file. A blank
band (one value everywhere) gives a FitsWarning naming the file and the band.
"""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.params import FitsView

FITS_MAGIC = b"SIMPLE  ="  # every FITS file starts with this card
GZIP_MAGIC = b"\x1f\x8b"
NORM_PERCENTILE = 99.5


class FitsWarning(UserWarning):
    """A FITS cutout was decoded, but something in it deserves a look (NaNs filled, a blank band)."""


def is_fits(path: str | Path) -> bool:
    """Whether the file is a FITS file, plain or gzipped (by content: names get lower-cased and shortened)."""
    with open(path, "rb") as fh:
        head = fh.read(len(FITS_MAGIC))
    if head.startswith(GZIP_MAGIC):
        try:
            with gzip.open(path, "rb") as fh:
                head = fh.read(len(FITS_MAGIC))
        except (OSError, EOFError):
            return False
    return head == FITS_MAGIC


def decode_image(path: str | Path, size: int | None = None, *, fits: FitsView = FitsView()) -> np.ndarray:
    """(H, W, 3) uint8 pixels of an image file, resized (bilinear) to size x size when `size` is given.

    `fits` sets how a FITS cutout is rendered (ignored for other formats).
    """
    try:
        fits_file = is_fits(path)
        if fits_file:
            img = Image.fromarray(fits_to_rgb(path, fits))
        else:
            with Image.open(path) as opened:
                img = opened.convert("RGB")
        if size is not None and img.size != (size, size):
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img)
    except PipelineError:
        raise
    except Exception as exc:
        raise PipelineError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from None


def read_fits_planes(path: str | Path) -> np.ndarray:
    """The image planes (bands, H, W) float64 of the first HDU holding a 2-D or 3-D image."""
    from astropy.io import fits as astropy_fits

    with astropy_fits.open(path, memmap=False) as hdus:
        data = next((h.data for h in hdus if h.data is not None and getattr(h.data, "ndim", 0) in (2, 3)), None)
        if data is None:
            raise PipelineError(f"{path}: FITS file holds no 2-D or 3-D image")
        planes = np.asarray(data, dtype=np.float64)
    if planes.ndim == 2:
        planes = planes[None]
    elif planes.shape[0] not in (1, 3) and planes.shape[-1] in (1, 3):  # stored channels-last
        planes = np.moveaxis(planes, -1, 0)
    if planes.shape[0] not in (1, 3):
        raise PipelineError(f"{path}: FITS image has {planes.shape[0]} bands (shape {planes.shape}); "
                            f"need 1 (greyscale) or 3 (an RGB composite)")
    return planes


def fits_to_rgb(path: str | Path, view: FitsView = FitsView()) -> np.ndarray:
    """(H, W, 3) uint8 rendering of a FITS cutout: asinh-stretched greyscale (1 band) or Lupton RGB (3 bands)."""
    from astropy.visualization import make_lupton_rgb

    planes = read_fits_planes(path)
    bad = ~np.isfinite(planes)
    if bad.all():
        raise PipelineError(f"{path}: every pixel of the FITS image is NaN or infinite")
    if bad.any():
        warnings.warn(f"{path}: {int(bad.sum())} NaN or infinite pixel(s) filled with 0 (black)", FitsWarning,
                      stacklevel=2)
        planes = np.where(bad, 0.0, planes)
    for band, plane in enumerate(planes):
        if plane.min() == plane.max():
            warnings.warn(f"{path}: FITS band {band} is blank (every pixel {plane.min():g})", FitsWarning,
                          stacklevel=2)
    if len(planes) == 3:
        planes = planes[list(view.bands)]
    intensity = planes.mean(0)
    scale = np.percentile(intensity, NORM_PERCENTILE)
    if scale <= 0:  # a faint cutout dominated by sky: fall back to its brightest pixel
        scale = intensity.max()
    if scale > 0:
        planes = planes / scale
    red, green, blue = planes if len(planes) == 3 else (planes[0],) * 3
    with np.errstate(invalid="ignore", divide="ignore"):  # astropy divides by the intensity, 0 on black sky
        rgb = make_lupton_rgb(red, green, blue, minimum=0, stretch=view.stretch, Q=view.q)
    return np.ascontiguousarray(np.flipud(rgb))  # FITS row 0 is the bottom; images put it on top
