"""Image pre-processing as a model's manifest describes it.

``manifest["preprocessing"]`` (keys in :mod:`npu.modelfile`): ``kind`` "image",
``layout`` "NCHW" or "NHWC", ``size`` [H, W], ``resize`` (shorter side before
the center crop; default ``size * 256 / 224``, the usual ImageNet ratio),
``mean`` / ``std`` per channel on 0..1 pixel values.

The steps, in order: decode (JPEG, PNG, anything Pillow reads) -> RGB ->
resize the shorter side (bilinear) -> center crop -> scale to 0..1 ->
normalize -> layout.  Servers use :func:`images_to_tensor` for string tensors
that carry encoded images.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from npu.modelfile import TensorSpec
from runtime.errors import InvalidRequest

# Default limit on decoded pixels: Pillow keeps 4 bytes a pixel, decoded and again converted to RGB: ~50 MB,
# and a decompression bomb is refused from its header, before it is decoded.
MAX_IMAGE_PIXELS = 6 * 1024 * 1024


@dataclass(frozen=True)
class ImageConfig:
    """The parts of ``preprocessing`` an image input needs."""

    size: tuple[int, int]
    resize: int
    layout: str = "NCHW"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    dtype: str = "float32"

    @classmethod
    def from_manifest(cls, manifest: dict, spec: TensorSpec | None = None) -> "ImageConfig | None":
        """The image config of a model, or None when its input is not an image."""
        pre = manifest.get("preprocessing") or {}
        if pre.get("kind", "image" if pre else "none") != "image":
            return None
        layout = str(pre.get("layout", "NCHW")).upper()
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"preprocessing.layout must be NCHW or NHWC, not {layout!r}")
        if "size" in pre:
            h, w = (int(v) for v in pre["size"])
        elif spec is not None and len(spec.shape) == 4:
            h, w = (spec.shape[2], spec.shape[3]) if layout == "NCHW" else (spec.shape[1], spec.shape[2])
        else:
            raise ValueError("preprocessing.size is missing and the input shape does not give it")
        resize = int(pre.get("resize") or round(max(h, w) * 256 / 224))
        mean = tuple(float(v) for v in pre.get("mean", (0.0, 0.0, 0.0)))
        std = tuple(float(v) for v in pre.get("std", (1.0, 1.0, 1.0)))
        return cls((h, w), resize, layout, mean, std, spec.dtype if spec else "float32")


def decode(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, size: tuple[int, int] | None = None):
    """Decode encoded image bytes to an RGB Pillow image; InvalidRequest if they are not an image.

    The pixel count is read from the header and checked against ``max_pixels`` before any pixel is
    decoded.  A larger JPEG is decoded at a reduced DCT scale (1/2, 1/4, 1/8) when that brings it
    within the limit and still covers ``size`` (W, H); images within the limit decode at full size.
    """
    from PIL import Image

    head = bytes(data[:8])
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels and size is not None and image.format == "JPEG":
            scale = next((k for k in (2, 4, 8) if (width // k) * (height // k) <= max_pixels), 8)
            want = (max(size[0], width // scale), max(size[1], height // scale))
            image.draft("RGB", want)
            width, height = image.size
        if width * height > max_pixels:
            raise InvalidRequest(f"the image is {width}x{height} pixels, more than the server's limit of "
                                 f"{max_pixels} pixels")
        image.load()
    except InvalidRequest:
        raise
    except Exception as exc:  # noqa: BLE001 -- Pillow raises many types for bad data
        raise InvalidRequest(f"cannot decode the image ({len(data)} bytes starting {head!r}): "
                             f"{type(exc).__name__}; expected JPEG or PNG bytes") from None
    return image if image.mode == "RGB" else image.convert("RGB")


def resize_and_crop(image, size: tuple[int, int], resize: int):
    """Resize the shorter side to ``resize`` (bilinear), then center-crop to ``size`` (H, W)."""
    from PIL import Image

    w, h = image.size
    scale = resize / min(w, h)
    nw, nh = max(size[1], round(w * scale)), max(size[0], round(h * scale))
    image = image.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - size[1]) // 2, (nh - size[0]) // 2
    return image.crop((left, top, left + size[1], top + size[0]))


def to_tensor(pixels: np.ndarray, config: ImageConfig) -> np.ndarray:
    """HWC uint8 RGB pixels (already cropped) -> one normalized image, layout CHW or HWC."""
    x = pixels.astype(np.float32) / 255.0
    x = (x - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    if config.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=config.dtype)


def preprocess_image(image, config: ImageConfig, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Encoded bytes, a Pillow image or an HWC uint8 array -> one model-ready image (no batch axis)."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray, memoryview)):
        image = decode(bytes(image), max_pixels, (config.resize, config.resize))
    elif isinstance(image, np.ndarray):
        image = Image.fromarray(image.astype(np.uint8)).convert("RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    cropped = resize_and_crop(image, config.size, config.resize)
    return to_tensor(np.asarray(cropped), config)


def images_to_tensor(images, config: ImageConfig, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A batch of encoded images (a string tensor, any shape of N elements) -> [N, ...] floats."""
    items = list(np.asarray(images, dtype=object).reshape(-1))
    if not items:
        raise InvalidRequest("the image input is empty; expected one or more encoded JPEG or PNG images")
    return np.stack([preprocess_image(_as_bytes(item), config, max_pixels) for item in items])


def _as_bytes(item) -> bytes:
    if isinstance(item, str):
        return item.encode("latin-1")
    if isinstance(item, (bytes, bytearray, np.bytes_)):
        return bytes(item)
    raise InvalidRequest(f"an image input element must be encoded image bytes, not {type(item).__name__}")
