#!/usr/bin/env python3
"""Write a random TransformerNet safetensors (pytorch/examples fast_neural_style names) for
testing onnxruntime_bench.py without Atelier's trained weights.

usage: python3 benches/onnx/make_random_transformer.py OUT.safetensors [--widths 32,64,128] [--seed 0]
"""
import argparse
import sys

try:
    import numpy as np
    from safetensors.numpy import save_file
except ImportError as e:
    sys.exit(f"make_random_transformer: missing Python package ({e.name}); "
             f"run: pip install -r benches/onnx/requirements.txt")

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--widths", default="32,64,128")
p.add_argument("--seed", type=int, default=0)
a = p.parse_args()
c1, c2, c3 = (int(v) for v in a.widths.split(","))
rng = np.random.default_rng(a.seed)
T = {}


def conv(name, cin, cout, k):
    T[f"{name}.conv2d.weight"] = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
    T[f"{name}.conv2d.bias"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)


def norm(name, c):
    T[f"{name}.weight"] = (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    T[f"{name}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)


conv("conv1", 3, c1, 9); norm("in1", c1)
conv("conv2", c1, c2, 3); norm("in2", c2)
conv("conv3", c2, c3, 3); norm("in3", c3)
for i in range(1, 6):
    conv(f"res{i}.conv1", c3, c3, 3); norm(f"res{i}.in1", c3)
    conv(f"res{i}.conv2", c3, c3, 3); norm(f"res{i}.in2", c3)
conv("deconv1", c3, c2, 3); norm("in4", c2)
conv("deconv2", c2, c1, 3); norm("in5", c1)
conv("deconv3", c1, 3, 9)
save_file(T, a.out)
print(f"wrote {a.out}: {sum(v.size for v in T.values())} parameters, widths {c1}/{c2}/{c3}")
