"""Checks an exported ONNX file and runs it, for tests/onnx.rs.

usage: onnx_check.py MODEL.onnx INPUT.f32 N,C,H,W OUTPUT.f32

onnx.checker validates the file (fully, with shape inference); ONNX Runtime runs it on the
input (raw little-endian f32 of the given shape) and the output is written the same way.
"""

import sys

import numpy as np
import onnx
import onnxruntime

model_path, input_path, shape, output_path = sys.argv[1:]
model = onnx.load(model_path)
onnx.checker.check_model(model, full_check=True)
images = np.fromfile(input_path, dtype="<f4").reshape([int(d) for d in shape.split(",")])
session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
(logits,) = session.run(["output"], {"input": images})
logits.astype("<f4").tofile(output_path)
print(f"opset {model.opset_import[0].version}, {len(model.graph.node)} nodes, output {list(logits.shape)}")
