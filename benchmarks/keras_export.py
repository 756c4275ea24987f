"""Export keras.applications classifiers to ONNX with tf2onnx, as a Keras user would.

    python benchmarks/keras_export.py --out /tmp/keras_onnx                  # every model below, full size
    python benchmarks/keras_export.py --out DIR --reduced --models ResNet50 MobileNetV2

Needs tensorflow and tf2onnx (not dependencies of this project: run it with a Python that has them, e.g. a
separate venv; benchmarks/bench_models.py --onnx DIR/*.onnx benchmarks what it wrote). Weights are random
(``weights=None``, seed 0), batch 1, NHWC inputs as Keras has them, opset 17. ``--reduced`` exports at the
smallest input side each application accepts (at most 96). Prints one JSON line per model: name, file,
seconds, or the export's error.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

# keras.applications classifiers, one per family, and their full input side
APPLICATIONS = {
    "ResNet50": 224, "ResNet50V2": 224, "MobileNet": 224, "MobileNetV2": 224, "MobileNetV3Small": 224,
    "MobileNetV3Large": 224, "EfficientNetB0": 224, "EfficientNetV2B0": 224, "DenseNet121": 224, "VGG16": 224,
    "InceptionV3": 299, "InceptionResNetV2": 299, "Xception": 299, "NASNetMobile": 224, "ConvNeXtTiny": 224,}
# the smallest side each accepts (Keras checks it), used by --reduced
MIN_SIDE = {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71, "NASNetMobile": 224}


def export(name: str, out_dir: str, reduced: bool) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(0)
    side = max(MIN_SIDE.get(name, 32), 96) if reduced else APPLICATIONS[name]
    if reduced and name == "NASNetMobile":
        side = 224  # NASNetMobile builds only at 224 without weights' own input shape
    kwargs = {"weights": None, "input_shape": (side, side, 3)}
    model = getattr(keras.applications, name)(**kwargs)
    path = os.path.join(out_dir, f"keras_{name}.onnx")
    t = time.perf_counter()
    spec = (tf.TensorSpec((1, side, side, 3), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=path)
    return {"name": name, "file": path, "seconds": round(time.perf_counter() - t, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="directory for the .onnx files")
    ap.add_argument("--models", nargs="*", default=list(APPLICATIONS), help=f"any of: {' '.join(APPLICATIONS)}")
    ap.add_argument("--reduced", action="store_true", help="the smallest input side each accepts (96 or more)")
    args = ap.parse_args(argv)
    unknown = [m for m in args.models if m not in APPLICATIONS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {list(APPLICATIONS)}")
    from torch_export import export_rows  # beside this script; it imports torch only to export

    export_rows(args.out, args.models, lambda name: export(name, args.out, args.reduced))
    return 0


if __name__ == "__main__":
    sys.exit(main())
