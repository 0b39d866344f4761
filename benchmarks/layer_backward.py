"""What the norm in FixNorm-FC / WN layers costs: forward + backward time and
peak memory against the plain layer.

For y = op(x, W) / ||W|| * min(g, cap) + b the layers use an analytic backward
(``fixnorm_mm/layers/functional.py``): the gradient of the norm is added in
place to the one weight gradient the plain layer computes as well. This
script times, for each layer, forward + backward of

* ``analytic``: the layer as it is (``FixNormLinear`` etc.);
* ``autograd``: the same function with autograd through ``W / ||W||``
  (``F.linear(x, W) * min(g, cap) / ||W||``, the implementation before);
* ``plain``: ``nn.Linear`` / ``nn.Conv2d`` of the same shape,

each call alternating with the plain one (A B B A ...), and prints the ratio
of the medians (CPU time of this process, then wall time) with the quartiles
of the per-pair ratios. Targets for FixNorm-FC 2048 -> 1000 at batch 8:
analytic / plain <= 1.5; peak memory at most one weight-sized tensor above
the start (the weight gradient itself).

Peak memory: the torch profiler's memory timeline (``profile_memory``) of one
forward + backward, started with no gradient allocated; the peak of the live
bytes created during the call, in units of the weight's size.

    python benchmarks/layer_backward.py                 # ~1 min, 1 thread
    python benchmarks/layer_backward.py --repeats 20    # quicker
"""
import argparse
import platform
import statistics
import time
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from fixnorm_mm.layers import (FixNormConv2d, FixNormLinear, WNConv2d, WNLinear,
                               gain_over_norm)


def autograd_forward(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's function with autograd through the norm (the old forward)."""
    scale = gain_over_norm(layer.weight, layer.g, layer.per_output, layer.cap)
    if isinstance(layer, nn.Linear):
        y = F.linear(x, layer.weight) * scale.reshape(-1)
    else:
        y = F.conv2d(x, layer.weight, None, layer.stride, layer.padding, layer.dilation,
                     layer.groups) * scale.reshape(1, -1, 1, 1)
    if layer.bias is not None:
        y = y + (layer.bias if y.dim() == 2 else layer.bias[:, None, None])
    return y


CASES = {
    # name: (layer, input shape)
    'FixNormLinear 2048->1000, batch 8 (target)':
        (lambda: FixNormLinear(2048, 1000, alpha=1.0, bias=False), (8, 2048)),
    'WNLinear 2048->1000, batch 8':
        (lambda: WNLinear(2048, 1000, bias=False), (8, 2048)),
    'FixNormConv2d 256->720 3x3, 2x256x16x16 (RetinaNet cls)':
        (lambda: FixNormConv2d(256, 720, 3, alpha=0.5, padding=1), (2, 256, 16, 16)),
    'WNConv2d 256->256 3x3, 2x256x16x16 (FPN / subnet)':
        (lambda: WNConv2d(256, 256, 3, padding=1), (2, 256, 16, 16)),
}


def plain_twin(layer: nn.Module) -> nn.Module:
    return layer.to_plain().requires_grad_(True)


def step_fn(forward: Callable, module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    params = list(module.parameters())

    def step():
        for p in params:
            p.grad = None
        forward(x).sum().backward()
    return step


def paired_times(a: Callable, b: Callable, repeats: int) -> Dict[str, List[float]]:
    t: Dict[str, List[float]] = dict(a=[], b=[], a_wall=[], b_wall=[])
    for i in range(repeats):
        for fn, key in ((a, 'a'), (b, 'b')) if i % 2 == 0 else ((b, 'b'), (a, 'a')):
            w, c = time.perf_counter(), time.process_time()
            fn()
            t[key].append(time.process_time() - c)
            t[key + '_wall'].append(time.perf_counter() - w)
    return t


def ratio(t: Dict[str, List[float]], suffix: str = '') -> str:
    a, b = t['a' + suffix], t['b' + suffix]
    pair = sorted(x / y for x, y in zip(a, b))
    q = statistics.quantiles(pair, n=4)
    return (f'{statistics.median(a) / statistics.median(b):5.2f}x '
            f'(pairs {q[0]:.2f}-{q[2]:.2f}; {1e3 * statistics.median(a):.2f} vs '
            f'{1e3 * statistics.median(b):.2f} ms)')


def peak_memory(step: Callable[[], None], params: List[torch.Tensor]) -> int:
    """Peak live bytes created during ``step()`` (memory timeline of the profiler)."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import Action
    step()  # warm up; then start from no gradients
    for p in params:
        p.grad = None
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True,
                 record_shapes=True, with_stack=True) as prof:
        step()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        if action == Action.CREATE:
            live += size
        elif action == Action.DESTROY:
            live -= size
        peak = max(peak, live)
    return peak


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--repeats', type=int, default=60)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--no-memory', action='store_true')
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f'torch {torch.__version__}, {platform.processor() or platform.machine()}, '
          f'{args.threads} thread(s), {args.repeats} repetitions per side, CPU time '
          '(wall time)')
    for name, (make, shape) in CASES.items():
        layer = make()
        plain = plain_twin(layer)
        x = torch.randn(*shape)
        analytic = step_fn(layer, layer, x)
        reference = step_fn(lambda t: autograd_forward(layer, t), layer, x)
        base = step_fn(plain, plain, x)
        for fn in (analytic, reference, base):
            fn()
        print(f'\n{name}')
        for label, fn in (('analytic / plain', analytic), ('autograd / plain', reference)):
            t = paired_times(fn, base, args.repeats)
            print(f'  {label:17s} {ratio(t)}  wall {ratio(t, "_wall")}')
        if args.no_memory:
            continue
        weight_bytes = layer.weight.numel() * layer.weight.element_size()
        for label, fn, module in (('analytic', analytic, layer), ('autograd', reference, layer),
                                  ('plain', base, plain)):
            peak = peak_memory(fn, list(module.parameters()))
            print(f'  peak memory {label:9s} +{peak / weight_bytes:.2f}x the weight')


if __name__ == '__main__':
    main()
