#!/usr/bin/python3
"""Write reference.safetensors with Python's struct and json modules only.

The file is an independent check of tapegrad's safetensors reader: it is
written by code that shares nothing with the C library. Its layout differs
from what tapegrad itself writes: the header lists the tensors in another
order than their data, carries __metadata__, uses spaces after separators
and pads with spaces to a multiple of 8 bytes.

The test test_nn_safetensors.c recomputes the values with the same formulas:
  "layer1.W": F32, shape [2, 3], element i = 0.25 * i - 0.5
  "layer1.b": F64, shape [1, 3], elements 1/3, -pi, 1e-310 (subnormal)
  "scale":    F64, shape [], the value 2.5

Run from this directory: /usr/bin/python3 make_safetensors.py
"""
import json
import math
import struct

weights = [0.25 * i - 0.5 for i in range(6)]
bias = [1.0 / 3.0, -math.pi, 1e-310]
scale = [2.5]

# Data order: bias, scale, weights.
blobs = [
    ("layer1.b", "F64", [1, 3], struct.pack("<3d", *bias)),
    ("scale", "F64", [], struct.pack("<d", *scale)),
    ("layer1.W", "F32", [2, 3], struct.pack("<6f", *weights)),
]

entries = {}
offset = 0
for name, dtype, shape, blob in blobs:
    entries[name] = {"dtype": dtype, "shape": shape,
                     "data_offsets": [offset, offset + len(blob)]}
    offset += len(blob)

# Header order: weights first, then metadata, then the others.
header = {"layer1.W": entries["layer1.W"],
          "__metadata__": {"format": "pt", "source": "make_safetensors.py"},
          "layer1.b": entries["layer1.b"],
          "scale": entries["scale"]}
text = json.dumps(header, separators=(", ", ": ")).encode("utf-8")
text += b" " * (-len(text) % 8)

with open("reference.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for _, _, _, blob in blobs:
        f.write(blob)
