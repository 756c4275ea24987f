"""Pre-processing against a numpy reference, labels and the top-k helper."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from npu.modelfile import TensorSpec
from runtime.errors import InvalidRequest
from runtime.labels import imagenet_classes, labels_for, softmax, top_k
from runtime.preprocess import ImageConfig, images_to_tensor, preprocess_image


def reference(path, size, resize, mean, std, layout):
    """The documented steps written out with numpy (Pillow only decodes and resizes)."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = resize / min(w, h)
    resized = np.asarray(image.resize((max(size[1], round(w * scale)), max(size[0], round(h * scale))),
                                      Image.BILINEAR), dtype=np.float64)
    top = (resized.shape[0] - size[0]) // 2
    left = (resized.shape[1] - size[1]) // 2
    crop = resized[top:top + size[0], left:left + size[1]] / 255.0
    out = (crop - np.array(mean)) / np.array(std)
    return out.transpose(2, 0, 1) if layout == "NCHW" else out


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("image", ["sample_jpeg", "sample_png"])
def test_matches_numpy_reference(request, image, layout):
    path = request.getfixturevalue(image)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    config = ImageConfig((24, 20), 28, layout, tuple(mean), tuple(std))
    got = preprocess_image(path.read_bytes(), config)
    want = reference(path, (24, 20), 28, mean, std, layout)
    assert got.dtype == np.float32
    assert got.shape == ((3, 24, 20) if layout == "NCHW" else (24, 20, 3))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_config_from_manifest_and_defaults():
    spec = TensorSpec("images", (1, 3, 224, 224))
    config = ImageConfig.from_manifest({"preprocessing": {"kind": "image", "mean": [0.5] * 3, "std": [0.25] * 3}}, spec)
    assert config.size == (224, 224) and config.resize == 256 and config.layout == "NCHW"
    nhwc = ImageConfig.from_manifest({"preprocessing": {"layout": "NHWC"}}, TensorSpec("x", (1, 32, 48, 3)))
    assert nhwc.size == (32, 48)
    assert ImageConfig.from_manifest({}, spec) is None
    assert ImageConfig.from_manifest({"preprocessing": {"kind": "none"}}, spec) is None
    with pytest.raises(ValueError, match="NCHW or NHWC"):
        ImageConfig.from_manifest({"preprocessing": {"layout": "CHW"}}, spec)


def test_batch_of_encoded_images(sample_jpeg, sample_png):
    config = ImageConfig((16, 16), 18)
    batch = images_to_tensor(np.array([sample_jpeg.read_bytes(), sample_png.read_bytes()], dtype=object), config)
    assert batch.shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(batch[1], preprocess_image(sample_png.read_bytes(), config))


def test_undecodable_image_says_what_was_expected():
    with pytest.raises(InvalidRequest, match="expected JPEG or PNG"):
        preprocess_image(b"definitely not an image", ImageConfig((16, 16), 18))
    with pytest.raises(InvalidRequest, match="empty"):
        images_to_tensor(np.array([], dtype=object), ImageConfig((16, 16), 18))


def test_grayscale_and_rgba_become_rgb():
    for mode in ("L", "RGBA", "P"):
        buf = io.BytesIO()
        Image.new(mode, (20, 30)).save(buf, format="PNG")
        assert preprocess_image(buf.getvalue(), ImageConfig((16, 16), 18)).shape == (3, 16, 16)


def test_imagenet_classes():
    names = imagenet_classes()
    assert len(names) == 1000
    assert names[0] == "tench, Tinca tinca"
    assert names[1] == "goldfish, Carassius auratus"
    assert names[207] == "golden retriever"
    assert names[281] == "tabby, tabby cat"
    assert names[999] == "toilet tissue, toilet paper, bathroom tissue"
    assert labels_for({"preprocessing": {"labels": "imagenet"}}) is names
    assert labels_for({"preprocessing": {"labels": ["a", "b"]}}) == ("a", "b")
    assert labels_for({}) is None


def test_top_k_softmax_confidences():
    logits = np.array([[1.0, 3.0, 2.0, -1.0, 0.0, 0.5]])
    top = top_k(logits, 3, ["a", "b", "c", "d", "e", "f"])
    probs = softmax(logits[0])
    assert [t[0] for t in top] == [1, 2, 0]
    assert [t[1] for t in top] == ["b", "c", "a"]
    np.testing.assert_allclose([t[2] for t in top], probs[[1, 2, 0]])
    # probabilities are taken as they are
    p = np.array([0.1, 0.7, 0.2])
    assert top_k(p, 1)[0] == (1, "class 1", pytest.approx(0.7))
    assert top_k(np.zeros(1000), 5, "imagenet")[0][1] == "tench, Tinca tinca"
