#!/usr/bin/env python3
"""Time Atelier's networks on onnxruntime (CPU), for `atelier bench` to print side by side.

The ONNX graphs are built directly from Atelier's safetensors weights (no torch):
  * the Johnson et al. style transformer (pytorch/examples fast_neural_style TransformerNet
    names; widths read from the weight shapes), input/output RGB 0..255, NCHW f32;
  * VGG16 conv layers up to relu4_3 (conv1_1 ... conv4_3), input NCHW f32.

usage:
  python3 benches/onnx/onnxruntime_bench.py --transformer T.safetensors --vgg V.safetensors \
      [--sizes 512,1024] [--vgg-sizes 512] [--threads N] [--iterations 3] [--json]
  python3 benches/onnx/onnxruntime_bench.py --transformer T.safetensors --vgg V.safetensors --verify

--verify compares the ONNX result with a plain numpy (float64) reference on small, odd-sized
inputs (transformer 36x44, VGG 32x32) and exits non-zero if the max relative error
(max |onnx - ref| / max |ref|) exceeds 1e-3. It runs no timings.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

try:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    import onnxruntime as ort
    from safetensors.numpy import load_file
except ImportError as e:  # one clear message, no traceback
    sys.exit(f"onnxruntime_bench: missing Python package ({e.name}); "
             f"run: pip install -r benches/onnx/requirements.txt")

OPSET = 17
IR_VERSION = 8
EPS = 1e-5
VERIFY_TOL = 1e-3
VGG_LAYERS = ["conv1_1", "conv1_2", "pool", "conv2_1", "conv2_2", "pool",
              "conv3_1", "conv3_2", "conv3_3", "pool", "conv4_1", "conv4_2", "conv4_3"]


# ---------------------------------------------------------------- ONNX graph building
class Graph:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def name(self, base):
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, base, arr):
        name = self.name(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def op(self, op_type, inputs, **attrs):
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x, w, b, stride=1, pad=0):
        k = w.shape[2]
        return self.op("Conv", [x, self.const("w", w.astype(np.float32)),
                                self.const("b", b.astype(np.float32))],
                       kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)

    def reflect_pad(self, x, p):
        pads = self.const("pads", np.array([0, 0, p, p, 0, 0, p, p], dtype=np.int64))
        return self.op("Pad", [x, pads], mode="reflect")

    def instance_norm(self, x, scale, bias):
        return self.op("InstanceNormalization",
                       [x, self.const("s", scale.astype(np.float32)),
                        self.const("b", bias.astype(np.float32))], epsilon=EPS)

    def upsample2(self, x):
        scales = self.const("scales", np.array([1, 1, 2, 2], dtype=np.float32))
        return self.op("Resize", [x, "", scales], mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    def model(self, x_shape, out, graph_name):
        g = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(x_shape))],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, None, None, None])],
            initializer=self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="atelier-onnxruntime-bench")
        m.ir_version = IR_VERSION
        onnx.checker.check_model(m)
        return m


# Transformer layers: (name, stride, norm, upsample, relu)
def transformer_layers(W):
    """The TransformerNet layer list, widths implied by the weight shapes in W."""
    layers = [("conv1", 1, "in1", False, True), ("conv2", 2, "in2", False, True),
              ("conv3", 2, "in3", False, True)]
    res = [f"res{i}" for i in range(1, 6)]
    tail = [("deconv1", 1, "in4", True, True), ("deconv2", 1, "in5", True, True),
            ("deconv3", 1, None, False, False)]
    for name in ["conv1", "conv2", "conv3", "deconv1", "deconv2", "deconv3"] + \
            [f"{r}.conv{j}" for r in res for j in (1, 2)]:
        if f"{name}.conv2d.weight" not in W:
            raise SystemExit(f"transformer weights lack {name}.conv2d.weight")
    return layers, res, tail


def build_transformer(W, h, w):
    g = Graph()
    head, res, tail = transformer_layers(W)

    def conv_layer(x, name, stride):
        k = W[f"{name}.conv2d.weight"].shape[2]
        return g.conv(g.reflect_pad(x, k // 2), W[f"{name}.conv2d.weight"],
                      W[f"{name}.conv2d.bias"], stride)

    def norm(x, name):
        return g.instance_norm(x, W[f"{name}.weight"], W[f"{name}.bias"])

    def stage(x, layer):
        name, stride, nm, up, relu = layer
        if up:
            x = g.upsample2(x)
        x = conv_layer(x, name, stride)
        if nm:
            x = norm(x, nm)
        return g.op("Relu", [x]) if relu else x

    x = "input"
    for layer in head:
        x = stage(x, layer)
    for r in res:
        y = g.op("Relu", [norm(conv_layer(x, f"{r}.conv1", 1), f"{r}.in1")])
        y = norm(conv_layer(y, f"{r}.conv2", 1), f"{r}.in2")
        x = g.op("Add", [y, x])
    for layer in tail:
        x = stage(x, layer)
    return g.model([1, 3, h, w], x, "transformer")


def build_vgg(W, h, w):
    g = Graph()
    x = "input"
    for layer in VGG_LAYERS:
        if layer == "pool":
            x = g.op("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        else:
            x = g.op("Relu", [g.conv(x, W[f"{layer}.weight"], W[f"{layer}.bias"], 1, 1)])
    return g.model([1, W["conv1_1.weight"].shape[1], h, w], x, "vgg16_relu4_3")


# ---------------------------------------------------------------- numpy reference (float64)
def np_conv(x, w, b, stride=1, pad=0):
    """x: (C,H,W), w: (O,C,k,k); zero padding `pad`; plain im2col."""
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    c, hh, ww = x.shape
    o, _, k, _ = w.shape
    oh, ow = (hh - k) // stride + 1, (ww - k) // stride + 1
    cols = np.empty((c, k, k, oh, ow), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, i, j] = x[:, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride]
    out = w.reshape(o, -1).astype(np.float64) @ cols.reshape(c * k * k, -1)
    return out.reshape(o, oh, ow) + b.astype(np.float64)[:, None, None]


def np_instance_norm(x, s, b):
    m = x.mean(axis=(1, 2), keepdims=True)
    v = x.var(axis=(1, 2), keepdims=True)  # biased, as PyTorch/ONNX
    return (x - m) / np.sqrt(v + EPS) * s[:, None, None] + b[:, None, None]


def ref_transformer(W, x):
    head, res, tail = transformer_layers(W)
    relu = lambda t: np.maximum(t, 0)

    def conv_layer(t, name, stride):
        k = W[f"{name}.conv2d.weight"].shape[2]
        p = k // 2
        t = np.pad(t, ((0, 0), (p, p), (p, p)), mode="reflect")  # == ReflectionPad2d
        return np_conv(t, W[f"{name}.conv2d.weight"], W[f"{name}.conv2d.bias"], stride)

    def norm(t, name):
        return np_instance_norm(t, W[f"{name}.weight"], W[f"{name}.bias"])

    def stage(t, layer):
        name, stride, nm, up, r = layer
        if up:
            t = t.repeat(2, axis=1).repeat(2, axis=2)  # nearest x2 (PyTorch Upsample)
        t = conv_layer(t, name, stride)
        if nm:
            t = norm(t, nm)
        return relu(t) if r else t

    t = x[0].astype(np.float64)
    for layer in head:
        t = stage(t, layer)
    for r in res:
        y = relu(norm(conv_layer(t, f"{r}.conv1", 1), f"{r}.in1"))
        t = norm(conv_layer(y, f"{r}.conv2", 1), f"{r}.in2") + t
    for layer in tail:
        t = stage(t, layer)
    return t[None]


def ref_vgg(W, x):
    t = x[0].astype(np.float64)
    for layer in VGG_LAYERS:
        if layer == "pool":
            c, h, w = t.shape
            t = t[:, :h // 2 * 2, :w // 2 * 2].reshape(c, h // 2, 2, w // 2, 2).max(axis=(2, 4))
        else:
            t = np.maximum(np_conv(t, W[f"{layer}.weight"], W[f"{layer}.bias"], 1, 1), 0)
    return t[None]


# ---------------------------------------------------------------- running
VGG_MEAN = np.array([123.68, 116.779, 103.939], dtype=np.float32)


def make_input(h, w, channels=3, seed=0, mean=None):
    x = np.random.default_rng(seed).uniform(0, 255, size=(1, channels, h, w)).astype(np.float32)
    if mean is not None:
        x -= mean[:, None, None]
    return x


def session(model, tmpdir, threads):
    path = os.path.join(tmpdir, f"{model.graph.name}.onnx")
    onnx.save(model, path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, sess_options=so, providers=["CPUExecutionProvider"])


def time_model(model, x, tmpdir, threads, iterations):
    sess = session(model, tmpdir, threads)
    feed = {"input": x}
    sess.run(None, feed)  # warm-up
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def rel_err(a, ref):
    if a.shape != ref.shape:
        raise SystemExit(f"shape mismatch: onnx {a.shape} vs reference {ref.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-12))


def verify(args, tw, vw, tmpdir, threads):
    failed = False
    checks = []
    if tw is not None:
        checks.append(("transformer", build_transformer(tw, 36, 44), lambda x: ref_transformer(tw, x),
                       make_input(36, 44)))
    if vw is not None:
        checks.append(("VGG16 to relu4_3", build_vgg(vw, 32, 32), lambda x: ref_vgg(vw, x),
                       make_input(32, 32, vw["conv1_1.weight"].shape[1], mean=VGG_MEAN)))
    for name, model, ref_fn, x in checks:
        got = session(model, tmpdir, threads).run(None, {"input": x})[0]
        ref = ref_fn(x)
        err = rel_err(got, ref)
        ok = err <= VERIFY_TOL
        failed |= not ok
        print(f"verify {name} {x.shape[2]}x{x.shape[3]}: output {tuple(got.shape)}, "
              f"max relative error {err:.3e} -> {'OK' if ok else 'FAIL'}")
    if failed:
        sys.exit(f"onnxruntime_bench: VERIFY FAILED (max relative error > {VERIFY_TOL})")


def parse_sizes(s):
    return [int(v) for v in s.split(",") if v.strip()]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transformer", help="style transformer weights (safetensors)")
    p.add_argument("--vgg", help="VGG16 feature weights (safetensors)")
    p.add_argument("--sizes", default="512,1024", help="square sides for the transformer")
    p.add_argument("--vgg-sizes", default="512", help="square sides for VGG16")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print a JSON list of rows")
    p.add_argument("--verify", action="store_true",
                   help="check ONNX against a numpy reference on small inputs, no timings")
    args = p.parse_args()
    if not args.transformer and not args.vgg:
        p.error("give --transformer and/or --vgg")
    if args.iterations < 1 or args.threads < 1:
        p.error("--iterations and --threads must be >= 1")

    print(f"onnxruntime {ort.__version__}, CPUExecutionProvider, {args.threads} thread(s)",
          file=sys.stderr)
    tw = load_file(args.transformer) if args.transformer else None
    vw = load_file(args.vgg) if args.vgg else None

    with tempfile.TemporaryDirectory(prefix="atelier-onnx-") as tmpdir:
        if args.verify:
            verify(args, tw, vw, tmpdir, args.threads)
            return
        rows = []
        if tw is not None:
            for side in parse_sizes(args.sizes):
                ms = time_model(build_transformer(tw, side, side), make_input(side, side),
                                tmpdir, args.threads, args.iterations)
                rows.append({"name": f"onnxruntime transformer forward, {side}x{side}",
                             "ms": round(ms, 3), "side": side})
        if vw is not None:
            for side in parse_sizes(args.vgg_sizes):
                x = make_input(side, side, vw["conv1_1.weight"].shape[1], mean=VGG_MEAN)
                ms = time_model(build_vgg(vw, side, side), x, tmpdir, args.threads, args.iterations)
                rows.append({"name": f"onnxruntime VGG16 forward to relu4_3, {side}x{side}",
                             "ms": round(ms, 3), "side": side})

    if args.json:
        print(json.dumps(rows))
    else:
        print("| benchmark | median ms |")
        print("| --- | ---: |")
        for r in rows:
            print(f"| {r['name']} | {r['ms']:.1f} |")


if __name__ == "__main__":
    main()
