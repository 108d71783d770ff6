import io

import numpy as np
import pytest
from PIL import Image

from synthgap.data.png import encode_png


@pytest.mark.parametrize("shape", [(7, 5), (6, 9, 3), (4, 3, 4), (1, 1, 3)])
@pytest.mark.parametrize("photo", [True, False])
def test_png_round_trips_through_pil(shape, photo):
    a = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(a, photo=photo)
    back = np.asarray(Image.open(io.BytesIO(data)))
    assert back.shape == a.shape and np.array_equal(back, a)
    assert encode_png(a, photo=photo) == data  # deterministic


def test_png_rejects_what_it_cannot_encode():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((4, 4), np.uint16))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((4, 4, 2), np.uint8))
