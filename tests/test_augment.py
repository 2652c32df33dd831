import torch

from galaxy_finetune.data.augment import eval_view, random_affine, train_view
from galaxy_finetune.core.params import AugmentParams

NONE = AugmentParams(rotation_deg=0, translate=0, scale_min=1, scale_max=1, shear_deg=0, flip=False)


def _images(n=6, size=16):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_eval_view_without_zoom_is_the_image():
    images = _images()
    out = eval_view(images, 16, zoom=1.0)
    assert out.dtype == torch.float32 and out.shape == (6, 3, 16, 16)
    assert torch.allclose(out, images.float() / 255, atol=1e-5)


def test_eval_view_zooms_into_the_centre_and_resizes():
    images = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
    images[..., 8:24, 8:24] = 255  # a centred square half the image wide
    out = eval_view(images, 16, zoom=2.0)
    assert out.shape == (1, 3, 16, 16)
    assert out.mean() > 0.95  # zoom 2 fills the view with the square


def test_identity_augmentation_and_pure_flips():
    images = _images()
    assert torch.allclose(train_view(images, 16, NONE), images.float() / 255, atol=1e-5)
    flips = NONE.model_copy(update={"flip": True})
    out = train_view(images, 16, flips, generator=torch.Generator().manual_seed(1))
    expected = images.float() / 255
    for o, e in zip(out, expected):
        assert any(torch.allclose(o, f, atol=1e-5) for f in (e, e.flip(-1), e.flip(-2), e.flip(-1, -2)))


def test_random_affine_statistics():
    aug = AugmentParams()
    theta = random_affine(20000, aug, "cpu", generator=torch.Generator().manual_seed(0))
    linear = theta[:, :, :2]
    det = torch.linalg.det(linear).abs()
    # shear preserves area, so |det| = 1 / zoom^2 with zoom in [1.2, 1.4]
    assert det.max() <= 1 / 1.2**2 + 1e-5 and det.min() >= 1 / 1.4**2 - 1e-5
    # where the input's centre lands in the output: the shift, within +-translate (2 x 0.1 normalised units)
    shift = torch.linalg.solve(linear, -theta[:, :, 2])
    assert shift.abs().max() <= 0.2 + 1e-5 and shift.abs().mean() > 0.08
    # flips: each mirror half the time (det sign flips on a single mirror)
    sign = torch.sign(torch.linalg.det(linear))
    assert 0.45 < (sign < 0).float().mean() < 0.55


def test_train_view_varies_and_keeps_brightness():
    images = torch.zeros(64, 3, 32, 32, dtype=torch.uint8)
    images[..., 12:20, 12:20] = 200
    out = train_view(images, 32, AugmentParams(), generator=torch.Generator().manual_seed(0))
    assert out.shape == (64, 3, 32, 32)
    assert not torch.allclose(out[0], out[1])
    # zoom-in 1.2-1.4 enlarges the central square by that factor squared, within the affine's spread
    ratio = out.sum((1, 2, 3)) / (images.float() / 255).sum((1, 2, 3))
    assert 1.2 < ratio.mean() < 2.2


def test_views_apply_the_encoders_normalisation_after_the_warp():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    norm = {"mean": [0.5, 0.4, 0.3], "std": [0.5, 0.25, 0.2]}
    mean, std = torch.tensor(norm["mean"]).view(1, 3, 1, 1), torch.tensor(norm["std"]).view(1, 3, 1, 1)
    assert torch.allclose(eval_view(images, 16, 1.2, norm), (eval_view(images, 16, 1.2) - mean) / std, atol=1e-5)
    still = AugmentParams(rotation_deg=0, translate=0, scale_min=1, scale_max=1, shear_deg=0, flip=False)
    assert torch.allclose(train_view(images, 16, still, normalisation=norm), (images.float() / 255 - mean) / std,
                          atol=1e-5)
