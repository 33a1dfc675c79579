"""Preprocessing: every file a catalog or a shopper may send becomes an upright RGB product picture."""

import io

import numpy as np
import pytest
from PIL import Image

from search.preprocessing import (
    CENTRE_VIEW_KEEP,
    centre_crop,
    load_rgb,
    model_views,
    pad_to_square,
    to_model_input,
    trim_margins,
)

RED, BLUE, WHITE = (220, 20, 20), (20, 20, 220), (255, 255, 255)


def _file(image: Image.Image, format: str, **params) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format, **params)
    buffer.seek(0)
    return buffer


def _product_shot(size=(300, 200), box=(100, 50, 200, 150), colour=RED, background=WHITE) -> Image.Image:
    """A coloured product on a plain background, like a catalog photo."""
    image = Image.new("RGB", size, background)
    image.paste(colour, box)
    return image


def _near(pixel, colour, tolerance=12) -> bool:
    return all(abs(int(a) - int(b)) <= tolerance for a, b in zip(pixel, colour, strict=True))


def test_exif_orientation_is_applied():
    # Stored landscape with the red half on the left; orientation 6 says "rotate 90° clockwise to view".
    image = Image.new("RGB", (200, 100), BLUE)
    image.paste(RED, (0, 0, 100, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    loaded = load_rgb(_file(image, "JPEG", exif=exif, quality=95))
    assert loaded.size == (100, 200)
    assert _near(loaded.getpixel((50, 20)), RED, 40)  # the left half is now on top
    assert _near(loaded.getpixel((50, 180)), BLUE, 40)


def test_transparent_parts_become_white():
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))  # fully transparent black
    image.paste((*RED, 255), (16, 16, 48, 48))
    loaded = load_rgb(_file(image, "PNG"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((2, 2)) == WHITE
    assert _near(loaded.getpixel((32, 32)), RED, 0)


def test_palette_with_transparency_becomes_rgb_on_white():
    image = _product_shot(size=(64, 64), box=(16, 16, 48, 48)).convert("P", palette=Image.Palette.ADAPTIVE)
    white_index = image.getpixel((0, 0))
    loaded = load_rgb(_file(image, "GIF", transparency=white_index))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((2, 2)) == WHITE
    assert _near(loaded.getpixel((32, 32)), RED)


def test_cmyk_jpeg_becomes_rgb():
    image = _product_shot(size=(64, 64), box=(16, 16, 48, 48)).convert("CMYK")
    loaded = load_rgb(_file(image, "JPEG", quality=95))
    assert loaded.mode == "RGB"
    assert _near(loaded.getpixel((32, 32)), RED, 30)
    assert _near(loaded.getpixel((2, 2)), WHITE, 10)


def test_sixteen_bit_greyscale_keeps_its_tones():
    # Values up to 4095 (12-bit scanner data in a 16-bit PNG): a plain convert would clip all to white.
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (16, 1))
    sixteen_bit = Image.fromarray(ramp)
    assert sixteen_bit.mode == "I;16"
    loaded = load_rgb(_file(sixteen_bit, "PNG"))
    assert loaded.mode == "RGB"
    row = np.asarray(loaded)[8, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert 100 < row[32] < 160  # mid-grey stays mid-grey
    assert np.all(np.diff(row.astype(int)) >= 0)


def test_a_large_sixteen_bit_photo_is_scaled_without_a_float_copy_of_it():
    """A 50-megapixel 16-bit PNG compresses to about 100 KB; scaling it in one float32 array and its temporaries
    took 16 bytes a pixel on top of the decoded photo (0.8 GB), on every upload anyone may make."""
    import tracemalloc

    from catalog.pixels import to_rgb

    side = 2000
    photo = Image.fromarray(np.tile(np.arange(side, dtype=np.uint16) * 30, (side, 1)))  # 8 MB decoded
    tracemalloc.start()
    try:
        grey = to_rgb(photo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.asarray(grey)[0, [0, -1], 0].tolist() == [0, 255]
    assert peak < 6 * side * side  # the 8-bit result (3 bytes a pixel as RGB) and a band of rows


def test_greyscale_becomes_rgb():
    loaded = load_rgb(_file(Image.new("L", (32, 32), 128), "PNG"))
    assert loaded.mode == "RGB"
    assert loaded.getpixel((5, 5)) == (128, 128, 128)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (32, 32), colour) for colour in (RED, BLUE, (20, 200, 20))]
    buffer = _file(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(buffer).n_frames == 3
    buffer.seek(0)
    assert _near(load_rgb(buffer).getpixel((16, 16)), RED, 30)


def test_large_jpeg_is_decoded_at_reduced_size():
    photo = _file(_product_shot(size=(1600, 1067), box=(500, 300, 1100, 800)), "JPEG", quality=90)
    loaded = load_rgb(photo, draft_size=224)
    assert min(loaded.size) >= 224  # never below what the model needs
    assert loaded.size == (400, 267)  # DCT scaling by 1/4 instead of a full 1600x1067 decode
    photo.seek(0)
    assert load_rgb(photo).size == (1600, 1067)


def test_uniform_margins_are_trimmed_to_the_product():
    trimmed, background = trim_margins(_product_shot(size=(300, 200), box=(100, 50, 200, 150)))
    assert background == WHITE
    width, height = trimmed.size
    assert 100 <= width <= 110 and 100 <= height <= 110  # the product plus a small margin


def test_margins_of_a_coloured_background_are_trimmed_too():
    grey = (235, 235, 230)
    trimmed, background = trim_margins(_product_shot(size=(300, 200), box=(20, 40, 120, 140), background=grey))
    assert _near(background, grey, 2)
    assert trimmed.size[0] <= 110


def test_photos_without_uniform_border_are_not_trimmed():
    noise = np.random.default_rng(0).integers(0, 255, size=(120, 160, 3), dtype=np.uint8)
    image = Image.fromarray(noise)
    trimmed, background = trim_margins(image)
    assert trimmed.size == image.size
    assert background == WHITE


def test_jpeg_noise_does_not_stop_the_trim():
    photo = load_rgb(_file(_product_shot(size=(600, 400), box=(250, 150, 350, 250)), "JPEG", quality=40))
    trimmed, _ = trim_margins(photo)
    assert trimmed.size[0] < 130 and trimmed.size[1] < 130  # 100x100 product, was 600x400


def test_pad_keeps_the_whole_product_and_crop_cuts_it():
    wide = _product_shot(size=(300, 100), box=(0, 0, 50, 100), colour=RED)  # product at the far left
    padded = pad_to_square(wide)
    assert padded.size == (300, 300)
    assert _near(padded.getpixel((10, 150)), RED)
    cropped = centre_crop(wide)
    assert cropped.size == (100, 100)
    assert not any(_near(cropped.getpixel((x, 50)), RED) for x in range(100))


@pytest.mark.parametrize("fit", ["pad", "crop"])
def test_model_input_is_normalised_chw(fit):
    array = to_model_input(_product_shot(), 224, fit=fit)
    assert array.shape == (3, 224, 224)
    assert array.dtype == np.float32
    assert array.min() >= -1.0 and array.max() <= 1.0
    assert np.isclose(array[:, 0, 0], 1.0).all()  # white background -> +1


def test_model_views_are_the_padded_photo_its_mirror_and_the_centre_crop():
    photo = Image.fromarray(np.random.default_rng(3).integers(0, 256, (150, 250, 3), dtype=np.uint8))
    views = model_views(photo, 64)

    def expected(image):  # the plain numpy normalisation: the stored vectors were computed with these numbers
        return np.asarray(image, dtype=np.float32).transpose(2, 0, 1) * (1.0 / 127.5) - 1.0

    keep_w, keep_h = round(250 * CENTRE_VIEW_KEEP), round(150 * CENTRE_VIEW_KEEP)
    left, top = (250 - keep_w) // 2, (150 - keep_h) // 2
    centre = photo.crop((left, top, left + keep_w, top + keep_h))
    assert views.shape == (3, 3, 64, 64) and views.dtype == np.float32
    padded = pad_to_square(photo, WHITE, size=64)
    np.testing.assert_array_equal(views[0], expected(padded))
    np.testing.assert_array_equal(views[1], expected(padded.transpose(Image.FLIP_LEFT_RIGHT)))
    np.testing.assert_array_equal(views[2], expected(pad_to_square(centre, WHITE, size=64)))


def test_trimmed_product_fills_the_model_input():
    small_product = _product_shot(size=(800, 800), box=(350, 350, 450, 450))
    array = to_model_input(small_product, 64)
    red = (array[0] > 0.5) & (array[1] < -0.5)
    assert red.mean() > 0.7  # a 1/64 speck of the photo becomes most of the input


def test_loaded_image_outlives_its_file(tmp_path):
    # Workers decode from storage handles that are closed before the batch goes through the network.
    path = tmp_path / "photo.jpg"
    _product_shot().save(path, "JPEG")
    with open(path, "rb") as handle:
        loaded = load_rgb(handle, draft_size=64)
    assert _near(loaded.getpixel((loaded.width // 2, loaded.height // 2)), RED, 40)
