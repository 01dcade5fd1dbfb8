#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into fuzz/corpus/TARGET/.

Each seed is a small valid input (or a near miss) that reaches deep into
its parser, so mutations start from there. Run it with any Python 3; it
uses only the standard library.
"""
import gzip
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write(target, name, data):
    directory = os.path.join(HERE, "corpus", target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


# IDX: magic 0 0 TYPE NDIM, big-endian u32 sizes, big-endian elements.
def idx(type_code, shape, elements, fmt):
    header = bytes([0, 0, type_code, len(shape)])
    header += b"".join(struct.pack(">I", d) for d in shape)
    return header + b"".join(struct.pack(">" + fmt, e) for e in elements)


write("fuzz_idx", "labels_u8", idx(0x08, [4], [0, 1, 2, 9], "B"))
write("fuzz_idx", "images_u8", idx(0x08, [2, 2, 2], [0, 255, 128, 1, 2, 3, 4, 5], "B"))
write("fuzz_idx", "labels_i8", idx(0x09, [3], [0, -1, 5], "b"))
write("fuzz_idx", "int16", idx(0x0B, [2, 2], [-300, 300, 0, 7], "h"))
write("fuzz_idx", "int32", idx(0x0C, [3], [70000, 1, 2], "i"))
write("fuzz_idx", "float32", idx(0x0D, [2], [0.5, -1.25], "f"))
write("fuzz_idx", "float64", idx(0x0E, [1, 2], [3.5, float("inf")], "d"))
write("fuzz_idx", "empty_count", idx(0x08, [0, 2, 2], [], "B"))
write("fuzz_idx", "images_gzip",
      gzip.compress(idx(0x08, [2, 2, 2], [0, 255, 128, 1, 2, 3, 4, 5], "B"), mtime=0))
write("fuzz_idx", "labels_gzip", gzip.compress(idx(0x08, [3], [1, 2, 3], "B"), mtime=0))

# CSV: a header of names, then rows of numbers.
write("fuzz_csv", "basic", b"x,y,label\n1,2.5,0\n-3,4e-2,1\n")
write("fuzz_csv", "crlf_quoted", b'"a ""q""",b\r\n1,2\r\n3,4')
write("fuzz_csv", "blank_lines", b"a\n\n1\n\n2\n")
write("fuzz_csv", "header_only", b"a,b,c\n")
write("fuzz_csv", "specials", b"a,b\n inf ,-nan\n1e308,0x1p-3\n")

# safetensors: the reference file of the tests, and a minimal valid file
# for the same parameters written with compact JSON.
with open(os.path.join(ROOT, "tests", "data", "reference.safetensors"), "rb") as f:
    write("fuzz_safetensors", "reference", f.read())

def safetensors(entries):
    header = {}
    blobs = b""
    for name, dtype, shape, blob in entries:
        header[name] = (dtype, shape, len(blobs), len(blobs) + len(blob))
        blobs += blob
    parts = []
    for name, (dtype, shape, begin, end) in header.items():
        parts.append('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}'
                     % (name, dtype, ",".join(str(d) for d in shape), begin, end))
    text = ("{" + ",".join(parts) + "}").encode()
    return struct.pack("<Q", len(text)) + text + blobs

write("fuzz_safetensors", "compact", safetensors([
    ("layer1.W", "F32", [2, 3], struct.pack("<6f", *range(6))),
    ("layer1.b", "F64", [1, 3], struct.pack("<3d", 1, 2, 3)),
    ("scale", "F64", [], struct.pack("<d", 2.5)),
]))

# Expressions: the first line is the expression, later lines bindings.
expressions = [
    b"x*y + x\nx=3\ny=4",
    b"sum(tanh(x @ W + b))\nx=[[1,2]]\nW=[[0.5,-1],[2,0]]\nb=[[0,1]]",
    b"cross_entropy(z, c)\nz=[[1,2,3],[0,0,1e4]]\nc=[2,0]",
    b"mse(softmax(x, 1), y) + bce(sigmoid(x), y)\nx=[[1,-2]]\ny=[[0,1]]",
    b"max(log_softmax(x, 0), 0) ^ 2 - -x / 2\nx=[1e-3,-1e4,0]",
    b"logsumexp(x, -1) + mean(relu(x)) + sqrt(abs(x))\nx=[[]]",
    b"bce_logits(x, y) * 2 ^ -1.5e1\nx=[inf]\ny=[1]",
]
for i, text in enumerate(expressions):
    write("fuzz_expr", "expr%d" % i, text)

# Op sequences: the decoder reads any bytes, so a few varied ones suffice.
write("fuzz_ops", "zeros", bytes(64))
write("fuzz_ops", "counting", bytes(range(256)))
write("fuzz_ops", "f64_anomaly", bytes([1, 0, 2, 1, 2, 3, 2]) + bytes(range(7, 200, 3)))
write("fuzz_ops", "specials", bytes([0, 1, 0, 2, 3, 3, 3] + [40, 2, 38, 41] * 20))
