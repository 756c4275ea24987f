"""How the ONNX files beside this script were made: Keras 3 recurrent layers exported by tf2onnx, as a user
exports them (TensorFlow 2.21 CPU, Keras 3.15.1, tf2onnx 1.17.0, opset 17). Not run by the tests (they need
neither TensorFlow nor tf2onnx); run it in an environment that has them to regenerate the files:

    python -m venv /tmp/tf && /tmp/tf/bin/pip install tensorflow-cpu tf2onnx
    /tmp/tf/bin/python tests/compiler/data/keras/export.py
"""
import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402

T, I, H = 6, 12, 16
HERE = os.path.dirname(os.path.abspath(__file__))


def export(layer, name):
    keras.utils.set_random_seed(0)
    inp = keras.Input((T, I), batch_size=1, name="x")
    model = keras.Model(inp, layer(inp))
    spec = (tf.TensorSpec((1, T, I), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=os.path.join(HERE, f"{name}.onnx"))


export(keras.layers.LSTM(H, return_sequences=True), "lstm")
export(keras.layers.GRU(H, return_sequences=True), "gru")                            # reset_after=True
export(keras.layers.SimpleRNN(H, return_sequences=True), "simplernn")
export(keras.layers.Bidirectional(keras.layers.LSTM(H, return_sequences=True)), "bilstm")
export(keras.layers.GRU(H, return_sequences=False, reset_after=False), "gru_ra0")
export(keras.layers.LSTM(H, return_sequences=True, activation="relu"), "lstm_relu")  # not an ONNX-default cell
export(keras.layers.LSTM(H, return_sequences=False), "lstm_last")
