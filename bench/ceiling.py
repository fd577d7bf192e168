#!/usr/bin/env python
"""How fast can the ``seed`` model train on this machine at all? A ceiling from its own operations.

    python bench/ceiling.py [--batch 8] [--repeats 20]

Times, one by one and at the training batch size, every convolution of the seed tower (forward, gradient
with respect to the input, gradient with respect to the weights) and its tanh + average pooling with
their gradients, next to a 2,048² float32 and bfloat16 matmul (the machine's practical peak). The sum
is one tower's share of a training step with no overhead at all; two towers per pair gives an upper
bound on training pairs/s that no input pipeline, batch size or graph option can beat in float32.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    import tensorflow as tf
    B, n = args.batch, args.repeats

    def ms(fn, *xs):
        for _ in range(3):
            fn(*xs)
        t = time.perf_counter()
        for _ in range(n):
            r = fn(*xs)
        _ = r.numpy()
        return (time.perf_counter() - t) / n * 1e3

    for dt in (tf.float32, tf.bfloat16):
        a = tf.cast(tf.random.normal([2048, 2048]), dt)
        t = ms(tf.function(lambda x, y: tf.matmul(x, y)), a, a)
        print(f"matmul 2048² {dt.name}: {2 * 2048 ** 3 / t / 1e6:.0f} GFLOP/s")

    total = 0.0
    print(f"\nseed tower, batch {B} (ms; GFLOP/s in brackets)")
    for hw, ci, co in ((128, 3, 64), (63, 64, 128), (30, 128, 64)):
        o = hw - 2
        x, w = tf.random.normal([B, hw, hw, ci]), tf.random.normal([3, 3, ci, co])
        dy = tf.random.normal([B, o, o, co])
        gflop = B * o * o * co * 9 * ci * 2 / 1e9
        fwd = ms(tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "VALID")), x, w)
        d_in = ms(tf.function(lambda dy, w: tf.nn.conv2d_transpose(dy, w, [B, hw, hw, ci], 1, "VALID")), dy, w)
        d_w = ms(tf.function(lambda x, dy: tf.compat.v1.nn.conv2d_backprop_filter(
            x, [3, 3, ci, co], dy, [1, 1, 1, 1], "VALID")), x, dy)

        @tf.function
        def act_pool(y):
            with tf.GradientTape() as tape:
                tape.watch(y)
                z = tf.nn.avg_pool2d(tf.tanh(y), 2, 2, "VALID")
            return tape.gradient(z, y)
        ap_ms = ms(act_pool, dy)
        total += fwd + d_in + d_w + ap_ms
        print(f"conv {hw}×{hw}×{ci}→{co}: forward {fwd:.2f} ({gflop / fwd * 1e3:.0f}), d/input {d_in:.2f} "
              f"({gflop / d_in * 1e3:.0f}), d/weights {d_w:.2f} ({gflop / d_w * 1e3:.0f}); "
              f"tanh+pool with gradient {ap_ms:.2f}")
    print(f"\nsum per tower call: {total:.1f} ms → at most {B / (2 * total / 1e3):.0f} training pairs/s "
          f"(two towers per pair, nothing else counted)")


if __name__ == "__main__":
    main()
