"""decode_image: the one decoder, for Pillow formats and FITS cutouts (made here with astropy)."""
import gzip
import shutil
import warnings

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from galaxy_finetune.core.errors import PipelineError
from galaxy_finetune.core.params import FitsView
from galaxy_finetune.data.images import FitsWarning, decode_image, is_fits


def galaxy(size=48, flux=2.0, noise=0.01, seed=0) -> np.ndarray:
    """An elliptical blob on sky noise, in arbitrary flux units."""
    y, x = np.mgrid[:size, :size]
    r = np.hypot(x - size / 2, (y - size / 2) * 1.6)
    return flux * np.exp(-r / 5) + np.random.default_rng(seed).normal(0, noise, (size, size))


def write_fits(path, data, primary_empty=False):
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(data)] if primary_empty else [fits.PrimaryHDU(data)]
    fits.HDUList(hdus).writeto(path)
    return path


def decode_quietly(path, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unexpected FitsWarning fails the test
        return decode_image(path, *args, **kwargs)


def test_pillow_formats_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "g.png")
    assert not is_fits(tmp_path / "g.png")
    np.testing.assert_array_equal(decode_image(tmp_path / "g.png"), pixels)
    assert decode_image(tmp_path / "g.png", 8).shape == (8, 8, 3)


def test_one_band_is_greyscale_with_an_asinh_stretch(tmp_path):
    data = galaxy()
    rgb = decode_quietly(write_fits(tmp_path / "g.fits", data.astype(np.float32)))
    assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    core, outskirts, sky = rgb[24, 24, 0], rgb[24, 34, 0], rgb[2, 2, 0]
    assert core > 200 and sky < 40
    # asinh, not linear: the outskirts (exp(-2) ~ 14% of the core's flux) keep well over 14% of its brightness
    assert outskirts > 0.3 * core
    # a 3-D cube with one plane, gzipped, named .fit, in an extension HDU: the same picture
    cube = write_fits(tmp_path / "cube.fit", data[None].astype(np.float32), primary_empty=True)
    with open(cube, "rb") as src, gzip.open(tmp_path / "cube.fits.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    np.testing.assert_array_equal(decode_quietly(tmp_path / "cube.fits.gz"), rgb)
    assert decode_quietly(tmp_path / "cube.fit", 64).shape == (64, 64, 3)


def test_flux_units_do_not_matter(tmp_path):
    """Each cutout is scaled by its own bright core, so nanomaggies and counts render alike."""
    a = decode_quietly(write_fits(tmp_path / "a.fits", galaxy()))
    b = decode_quietly(write_fits(tmp_path / "b.fits", galaxy() * 3000))
    assert np.abs(a.astype(int) - b).max() <= 1


def test_fits_is_recognised_by_content_not_name(tmp_path):
    write_fits(tmp_path / "g.fits", galaxy())
    shutil.copy(tmp_path / "g.fits", tmp_path / "renamed.gz")  # what a lower-cased, one-suffix copy may look like
    assert is_fits(tmp_path / "renamed.gz")
    np.testing.assert_array_equal(decode_quietly(tmp_path / "renamed.gz"), decode_quietly(tmp_path / "g.fits"))


def test_three_bands_make_a_lupton_rgb_composite_in_the_band_order_asked(tmp_path):
    g, r, z = galaxy(flux=0.5), galaxy(flux=1.0, seed=1), galaxy(flux=2.0, seed=2)  # a red galaxy
    path = write_fits(tmp_path / "grz.fits", np.stack([g, r, z]))
    rgb = decode_quietly(path).astype(int)
    red, green, blue = rgb[24, 24]
    assert red > green > blue  # default bands (2, 1, 0): z -> red, g -> blue
    swapped = decode_quietly(path, fits=FitsView(bands=(0, 1, 2))).astype(int)
    assert swapped[24, 24, 2] > swapped[24, 24, 1] > swapped[24, 24, 0]
    softer = decode_quietly(path, fits=FitsView(stretch=1.0)).astype(int)
    assert softer[34, 24].sum() < rgb[34, 24].sum()  # a longer linear range: fainter outskirts
    # FITS row 0 is the bottom of the picture: the decoded image is flipped to put it at the bottom too
    marked = np.stack([g, r, z])
    marked[:, 0, 0] = 50.0
    bright = decode_quietly(write_fits(tmp_path / "marked.fits", marked)).sum(-1)
    assert bright[-1, 0] > bright[0, 0]


def test_nans_are_filled_black_with_a_warning_naming_the_file(tmp_path):
    data = galaxy()
    data[:5] = np.nan
    path = write_fits(tmp_path / "edge.fits", data)
    with pytest.warns(FitsWarning, match=rf"{path}: 240 NaN or infinite pixel\(s\) filled with 0"):
        rgb = decode_image(path)
    assert (rgb[-5:] == 0).all()  # the bottom rows of the FITS image are the bottom of the picture
    data[:] = np.nan
    path = write_fits(tmp_path / "all_nan.fits", data)
    with pytest.raises(PipelineError, match=rf"^{path}: every pixel of the FITS image is NaN"):
        decode_image(path)


def test_a_blank_band_warns_naming_the_file_and_band(tmp_path):
    cube = np.stack([galaxy(), np.zeros((48, 48)), galaxy(seed=3)])
    path = write_fits(tmp_path / "blank.fits", cube)
    with pytest.warns(FitsWarning, match=rf"^{path}: FITS band 1 is blank \(every pixel 0\)"):
        assert decode_image(path).shape == (48, 48, 3)


@pytest.mark.parametrize("bands", [2, 4])
def test_a_wrong_band_count_is_a_one_line_error(tmp_path, bands):
    path = write_fits(tmp_path / "cube.fits", np.stack([galaxy(seed=i) for i in range(bands)]))
    with pytest.raises(PipelineError) as info:
        decode_image(path)
    assert str(info.value) == (f"{path}: FITS image has {bands} bands (shape ({bands}, 48, 48)); need 1 "
                               f"(greyscale) or 3 (an RGB composite)")


def test_a_fits_without_an_image_and_a_broken_file(tmp_path):
    path = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("a", "E", array=[1.0])])]
                 ).writeto(path)
    with pytest.raises(PipelineError, match=rf"^{path}: FITS file holds no 2-D or 3-D image"):
        decode_image(path)
    cut = tmp_path / "cut.fits"
    cut.write_bytes(write_fits(tmp_path / "whole.fits", galaxy()).read_bytes()[:3000])
    with pytest.raises(PipelineError, match=rf"^{cut}: cannot decode image"):
        decode_image(cut)
