"""The birds' images decoded by Pillow and resized in numpy: the pixels TensorFlow gives
(``decode_jpeg`` with the accurate DCT, ``tf.image.resize``) to float rounding, and one line
naming a file that cannot be read."""

import numpy as np
import pytest
from PIL import Image

from cvtrain.data.birds import decode
from cvtrain.errors import DataError


@pytest.mark.parametrize("shape", [(375, 500), (500, 375), (100, 80), (224, 224), (50, 300)])
def test_decode_and_resize_give_tensorflow_s_pixels(tmp_path, shape):
    tf = pytest.importorskip("tensorflow")
    path = tmp_path / "bird.jpg"
    rng = np.random.default_rng(sum(shape))
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path, quality=90)
    image = tf.io.decode_jpeg(tf.io.read_file(str(path)), channels=3,
                              dct_method="INTEGER_ACCURATE")
    assert np.array_equal(decode.read_rgb(path), image.numpy())
    want = tf.image.resize(tf.cast(image, tf.float32), [224, 224]).numpy()
    np.testing.assert_allclose(decode.resize_bilinear(decode.read_rgb(path), 224), want,
                               atol=1e-4, rtol=0)
    got = decode.load_image(path, 224)
    np.testing.assert_allclose(got, want[..., ::-1] - decode.IMAGENET_BGR_MEAN, atol=1e-4,
                               rtol=0)


def test_grey_images_become_rgb(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(path)
    rgb = decode.read_rgb(path)
    assert rgb.shape == (8, 8, 3) and (rgb[..., 0] == rgb[..., 2]).all()


def test_an_unreadable_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as err:
        decode.read_rgb(path)
    assert str(err.value).startswith(f"{path}: not a readable image")
    assert "\n" not in str(err.value)
