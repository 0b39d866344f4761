"""What Hyperball costs around AdamW: time of its two hooks against the
optimizer's own step, and the memory it keeps.

A step of Hyperball is ``remember()`` (copy W_t into a kept buffer) before the
base optimizer's step and ``project(eta)`` after it (u = W_t - W_step; one
fused norm of u, one fused multiply-add, one fused norm of W, one fused
multiply: docs/methods.md). This script builds the projection matrices of a
ViT (``--width``, ``--depth``: ViT-S/16 by default, 12 x (qkv, proj, fc1,
fc2)), gives them random gradients, and times, alternating (A B B A ...):

* ``adamw``: ``torch.optim.AdamW.step()`` (foreach, the default on a GPU; on
  a CPU torch's default is the per-tensor loop, timed too with ``--foreach 0``);
* ``adamw+hyperball``: the same step between Hyperball's two hooks;

and prints the ratio of the medians, (adamw+hyperball) / adamw, with the
quartiles of the per-pair ratios, and the memory Hyperball keeps: the buffer
over the controlled weights, in bytes and as a multiple of their size (1.0:
one copy, no optimizer-state-sized extra).

    python benchmarks/hyperball_overhead.py            # ~1 min on one CPU thread
    python benchmarks/hyperball_overhead.py --repeats 10 --width 192   # smoke
"""
import argparse
import statistics
import time

import torch

from fixnorm_mm.norm_control import Hyperball


def vit_matrices(width: int, depth: int, mlp_ratio: int = 4):
    shapes = [(3 * width, width), (width, width), (mlp_ratio * width, width),
              (width, mlp_ratio * width)] * depth
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s, generator=g) * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=g) * 1e-3
    return params


def timed(fn, repeats: int):
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--width', type=int, default=384)
    p.add_argument('--depth', type=int, default=12)
    p.add_argument('--repeats', type=int, default=40)
    p.add_argument('--foreach', type=int, default=1, choices=(0, 1),
                   help='AdamW(foreach=...): 1 = the GPU default, 0 = the CPU default')
    p.add_argument('--threads', type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    params = vit_matrices(args.width, args.depth)
    numel = sum(q.numel() for q in params)
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0, foreach=bool(args.foreach))
    ball = Hyperball({f'm{i}': q for i, q in enumerate(params)})
    opt.step()  # Adam's state exists before timing

    def plain():
        opt.step()

    def with_ball():
        ball.remember()
        opt.step()
        ball.project(0.01)

    with_ball()  # the buffer exists before timing
    a, b = [], []
    for i in range(args.repeats):
        first, second = (plain, with_ball) if i % 2 == 0 else (with_ball, plain)
        t1, t2 = timed(first, 1)[0], timed(second, 1)[0]
        a.append(t1 if first is plain else t2)
        b.append(t2 if first is plain else t1)
    ratios = sorted(y / x for x, y in zip(a, b))
    q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
    buffer = sum(t.numel() * t.element_size() for t in ball._buffer)
    weights = sum(q.numel() * q.element_size() for q in params)
    with_ball()  # after a Hyperball step every matrix is on its sphere
    torch.testing.assert_close(ball.norms(), ball.radii, rtol=1e-5, atol=0)
    print(f'Hyperball around AdamW(foreach={bool(args.foreach)}): {len(params)} matrices, '
          f'{numel:,} params (ViT width {args.width}, depth {args.depth}), '
          f'{args.threads} thread(s), {args.repeats} alternating pairs')
    print(f'  AdamW step: median {statistics.median(a) * 1e3:.2f} ms; with Hyperball: '
          f'{statistics.median(b) * 1e3:.2f} ms')
    print(f'  (AdamW + Hyperball) / AdamW: {statistics.median(b) / statistics.median(a):.3f} '
          f'(per-pair quartiles {q1:.3f} .. {q3:.3f})')
    print(f'  memory kept: {buffer / 2 ** 20:.1f} MiB = {buffer / weights:.2f} x the controlled '
          f"weights (AdamW's own state: {2 * weights / 2 ** 20:.1f} MiB = 2.00 x)")
    return dict(ratio=statistics.median(b) / statistics.median(a), q1=q1, q3=q3,
                buffer_over_weights=buffer / weights)


if __name__ == '__main__':
    main()
