import numpy as np
import pytest

from ss3d_data import Ss3dError
from ss3d_data.preprocess import crop_to_mask, resize_view


def test_crop_centres_object_longer_side_fills_and_background_zero():
    image = np.full((100, 200, 3), 200, np.uint8)
    mask = np.zeros((100, 200), np.uint8)
    mask[20:40, 50:130] = 255  # 80 wide, 20 tall
    out = crop_to_mask(image, mask, 64)
    assert out.image.shape == (64, 64, 3) and out.mask.shape == (64, 64)
    fg = out.mask >= 128
    cols = np.nonzero(fg.any(0))[0]
    rows = np.nonzero(fg.any(1))[0]
    assert cols[0] == 0 and cols[-1] == 63  # longer side spans the width
    assert abs((rows[0] + rows[-1]) / 2 - 31.5) <= 1  # centred vertically
    assert (out.image[~fg] == 0).all()
    # the transform maps the box corners onto the output box
    x, y = np.array([50, 20]) * out.scale + np.array(out.offset)
    assert abs(x - 0) < 1 and abs(y - rows[0]) < 1.5


def test_bad_inputs_are_clear_errors():
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(Ss3dError, match="empty"):
        crop_to_mask(image, np.zeros((10, 10), np.uint8), 8)
    with pytest.raises(Ss3dError, match="mask is 9x10"):
        crop_to_mask(image, np.zeros((10, 9), np.uint8), 8)
    with pytest.raises(Ss3dError, match="8-bit RGB"):
        crop_to_mask(np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8), 8)


def test_resize_view_scales_intrinsics_consistently():
    k = np.array([[100.0, 0, 64], [0, 100.0, 64], [0, 0, 1]], np.float32)
    image = np.zeros((128, 128, 3), np.uint8)
    mask = np.zeros((128, 128), np.uint8)
    mask[32:96, 32:96] = 255
    img, msk, k2 = resize_view(image, mask, k, 64)
    assert img.shape == (64, 64, 3) and msk.shape == (64, 64)
    np.testing.assert_allclose(k2, [[50, 0, 32], [0, 50, 32], [0, 0, 1]])
    assert msk[16:48, 16:48].min() == 255 and msk[:15].max() == 0


def test_margin_crop_pads_at_the_photos_scale_and_maps_the_box():
    image = np.full((120, 200, 3), 200, np.uint8)
    mask = np.zeros((120, 200), np.uint8)
    mask[30:70, 40:140] = 255  # 100 wide, 40 tall: squared to 100 x 100, then 20 px on every side -> 140 px
    out = crop_to_mask(image, mask, 70, margin_px=20)
    assert out.image.shape == (70, 70, 3) and out.scale == 0.5
    fg = out.mask >= 128
    cols, rows = np.nonzero(fg.any(0))[0], np.nonzero(fg.any(1))[0]
    assert (cols[0], cols[-1]) == (10, 59) and (rows[0], rows[-1]) == (25, 44)  # 20 px of the photo = 10 px here
    for corner, pixel in (((40, 30), (10, 25)), ((140, 70), (60, 45))):
        np.testing.assert_allclose(np.array(corner) * out.scale + np.array(out.offset), pixel)
    # The soft mask scales the photo instead of cutting it at the threshold.
    mask[30:70, 40] = 200  # above the threshold: the hard crop keeps it whole, the soft one at 200 / 255
    soft = crop_to_mask(image, mask, 70, margin_px=20, soft_mask=True)
    hard = crop_to_mask(image, mask, 70, margin_px=20)
    assert soft.image[30, 10, 0] < hard.image[30, 10, 0]
    with pytest.raises(Ss3dError, match="margin"):
        crop_to_mask(image, mask, 70, margin_px=-1)
