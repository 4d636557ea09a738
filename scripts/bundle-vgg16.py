#!/usr/bin/env python3
"""Writes models/vgg16-relu4_3.safetensors: VGG16's convolutions conv1_1 … conv4_3 in f16, the
encoder of the `arbitrary` method and enough for optimisation and training with the default
layers. Standard library only (no numpy): usage

    python3 scripts/bundle-vgg16.py ../shared/models/vgg16-features.safetensors models/vgg16-relu4_3.safetensors
"""
import json
import struct
import sys

LAYERS = ["1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "3_3", "4_1", "4_2", "4_3"]
CREDIT = ("VGG16 weights: Karen Simonyan and Andrew Zisserman, Visual Geometry Group, University "
          "of Oxford (CC BY 4.0, https://www.robots.ox.ac.uk/~vgg/research/very_deep/); "
          "convolutions conv1_1 to conv4_3 stored as f16 by Atelier.")


def main(source, target):
    with open(source, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    start = 8 + header_len
    metadata = dict(header.get("__metadata__", {}))
    metadata["last_layer"] = "relu4_3"
    metadata["credits"] = CREDIT
    out_header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for layer in LAYERS:
        for part in ("weight", "bias"):
            name = f"conv{layer}.{part}"
            entry = header[name]
            assert entry["dtype"] == "F32", (name, entry["dtype"])
            a, b = entry["data_offsets"]
            count = (b - a) // 4
            values = struct.unpack(f"<{count}f", data[start + a:start + b])
            blob = struct.pack(f"<{count}e", *values)
            out_header[name] = {
                "dtype": "F16",
                "shape": entry["shape"],
                "data_offsets": [offset, offset + len(blob)],
            }
            blobs.append(blob)
            offset += len(blob)
    encoded = json.dumps(out_header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(target + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for blob in blobs:
            f.write(blob)
    import os
    os.replace(target + ".tmp", target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
