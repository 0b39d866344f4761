"""What FixNorm costs in speed, for the parameter sets of ResNet50-D and
MobileNetV2 (mmpretrain ``ResNetV1d`` depth 50, ``MobileNetV2``, 1000 classes).

Two ratios per model, each measured side by side in one process, the two
timed things alternating (A B B A ...) so that drift of a shared machine hits
both; printed as the ratio of the medians with the quartiles of the per-pair
ratios, in CPU time of the process (the targets are judged on it: with one
thread, it leaves out the time other jobs hold the core) and in wall time:

1. **rescale / step**: one Algo 1 rescale (the core ``NormFixer.rescale()``,
   line 6 of Algo 1) over the fixed set (every conv weight followed by BN, and
   the FixNorm-FC direction) against one step of SGD with Nesterov momentum
   over all parameters. Target: <= 0.5.
2. **iteration FixNorm / WD**: one full training iteration (``train_step``:
   data preprocessing, forward, loss, backward, optimizer step, and for
   FixNorm the rescale) of the model with FixNorm-FC and
   ``FixNormOptimWrapper``, against the same model with a plain FC and
   weight decay 1e-4 in a plain ``OptimWrapper``. Target: within 1%.
   A breakdown times the three things that differ in isolation (FixNorm-FC's
   forward+backward against a plain FC's, the rescale, SGD's weight-decay
   term) and the ratio they predict.

On CPU, torch's SGD uses its per-tensor loop (``foreach`` is chosen by default
only on CUDA) while the rescale is two ``_foreach`` calls; both are timed as a
user gets them. Iterations run at ``--batch`` x ``--size`` images (default
8 x 224: seconds per ResNet50-D iteration on one CPU core).

    python benchmarks/overhead.py [--out docs/results/overhead.txt]   # ~4 min
    python benchmarks/overhead.py --smoke         # seconds
"""
import argparse
import copy
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List

import torch

import fixnorm_mm  # noqa: F401  (registers the optim wrappers and layers)
from fixnorm_mm.layers import FixNormLinear

MODELS = {
    'ResNet50-D': dict(backbone=dict(type='ResNetV1d', depth=50), in_channels=2048),
    'MobileNetV2': dict(backbone=dict(type='MobileNetV2', widen_factor=1.0), in_channels=1280),
}


def build_classifier(name: str, fixnorm_fc: bool, alpha: float = 1.0):
    """mmpretrain ImageClassifier; with ``fixnorm_fc`` the head's FC is FixNorm-FC (Eq. 10)."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS as PRETRAIN_MODELS
    spec = MODELS[name]
    # a Runner built earlier in the process (tests) may have left another
    # default scope current, where the nested types would not be found
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = PRETRAIN_MODELS.build(dict(
            type='ImageClassifier', backbone=spec['backbone'],
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=spec['in_channels'],
                      loss=dict(type='CrossEntropyLoss'))))
    model.init_weights()
    if fixnorm_fc:
        fc = model.head.fc
        model.head.fc = FixNormLinear(fc.in_features, fc.out_features, alpha=alpha)
    return model.train()


def make_batch(batch: int, size: int, seed: int = 0) -> dict:
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randint(0, 256, (batch, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 1000, (batch,), generator=g)
    return dict(inputs=inputs,
                data_samples=[DataSample().set_gt_label(int(y)) for y in labels])


def build_wrappers(name: str):
    """(FixNorm model, its optim wrapper), (WD model, its optim wrapper)."""
    from mmengine.optim import build_optim_wrapper
    sgd = dict(type='SGD', lr=0.1, momentum=0.9, nesterov=True)
    fix_model = build_classifier(name, fixnorm_fc=True)
    fix_wrapper = build_optim_wrapper(fix_model, dict(
        type='FixNormOptimWrapper', constructor='FixNormOptimWrapperConstructor',
        optimizer=dict(sgd, weight_decay=0.0)))
    wd_model = build_classifier(name, fixnorm_fc=False)
    wd_wrapper = build_optim_wrapper(wd_model, dict(
        type='OptimWrapper', optimizer=dict(sgd, weight_decay=1e-4),
        paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0)))
    return (fix_model, fix_wrapper), (wd_model, wd_wrapper)


def paired_times(a: Callable, b: Callable, repeats: int) -> Dict[str, List[float]]:
    """Alternate a and b (A B B A ...) ``repeats`` times each; CPU time of this
    process (``a``, ``b``) and wall time (``a_wall``, ``b_wall``) of each call."""
    t: Dict[str, List[float]] = dict(a=[], b=[], a_wall=[], b_wall=[])
    for i in range(repeats):
        for fn, key in ((a, 'a'), (b, 'b')) if i % 2 == 0 else ((b, 'b'), (a, 'a')):
            w, c = time.perf_counter(), time.process_time()
            fn()
            t[key].append(time.process_time() - c)
            t[key + '_wall'].append(time.perf_counter() - w)
    return t


def ratio_stats(t: Dict[str, List[float]]) -> dict:
    """Ratio of medians A/B and the quartiles of the per-pair ratios, in CPU
    time (what the target is judged on: on a shared machine the wall clock also
    counts the time other jobs hold the core) and in wall time."""
    out = {}
    for suffix in ('', '_wall'):
        a, b = t['a' + suffix], t['b' + suffix]
        pair = sorted(x / y for x, y in zip(a, b))
        q = statistics.quantiles(pair, n=4) if len(pair) >= 2 else [pair[0]] * 3
        out.update({f'median_a{suffix}': statistics.median(a),
                    f'median_b{suffix}': statistics.median(b),
                    f'ratio{suffix}': statistics.median(a) / statistics.median(b),
                    f'pair_q1{suffix}': q[0], f'pair_median{suffix}': statistics.median(pair),
                    f'pair_q3{suffix}': q[2]})
    return out


def bench_model(name: str, args) -> dict:
    torch.manual_seed(0)
    (fix_model, fix_wrapper), (wd_model, wd_wrapper) = build_wrappers(name)
    data = make_batch(args.batch, args.size)
    # The first FixNorm step traces the forward, selects the fixed set and
    # takes the reference norms; warm both paths up (allocator, momentum buffers).
    for _ in range(args.warmup):
        fix_model.train_step(data, fix_wrapper)
        wd_model.train_step(data, wd_wrapper)
    fixer = fix_wrapper.fixnorm.fixer
    fixed = sum(p.numel() for ps in fixer.params.values() for p in ps)
    total = sum(p.numel() for p in fix_model.parameters())
    # train_step zeroes the gradients after its step; give the micro-benchmark
    # real ones (one more forward/backward), else SGD would skip every tensor.
    batch = fix_model.data_preprocessor(data, True)
    loss, _ = fix_model.parse_losses(fix_model(**batch, mode='loss'))
    loss.backward()
    optimizer = fix_wrapper.optimizer  # SGD-Nesterov over all parameters
    out = dict(model=name, params=total, fixed_params=fixed,
               fixed_tensors=sum(len(ps) for ps in fixer.params.values()))
    out['rescale_vs_step'] = ratio_stats(paired_times(
        fixer.rescale, optimizer.step, args.micro_repeats))
    out['breakdown'] = breakdown(fix_model, wd_model, args)
    out['breakdown']['rescale_ms'] = out['rescale_vs_step']['median_a'] * 1e3
    # as many iteration pairs as fit in the time budget (one pair measured in warm-up)
    t = time.process_time()
    fix_model.train_step(data, fix_wrapper)
    wd_model.train_step(data, wd_wrapper)
    pairs = int(min(max(args.repeats, args.budget / (time.process_time() - t)), 400))
    out['iter_fixnorm_vs_wd'] = ratio_stats(paired_times(
        lambda: fix_model.train_step(data, fix_wrapper),
        lambda: wd_model.train_step(data, wd_wrapper), pairs))
    out['iter_fixnorm_vs_wd']['pairs'] = pairs
    return out


def breakdown(fix_model, wd_model, args) -> dict:
    """Where an iteration of FixNorm and one of WD differ, timed in isolation
    (ms, medians): FixNorm-FC's forward+backward against the plain FC's at
    this batch (Eq. 10 normalises the weight at every forward), and the
    weight-decay term of SGD (decay on every conv/FC weight)."""
    fc_fix, fc_plain = copy.deepcopy(fix_model.head.fc), copy.deepcopy(wd_model.head.fc)
    x = torch.randn(args.batch, fc_plain.in_features)

    def fwd_bwd(fc):
        def run():
            fc.zero_grad(set_to_none=True)
            fc(x).sum().backward()
        return run

    n = max(args.micro_repeats, 5)
    fc = paired_times(fwd_bwd(fc_fix), fwd_bwd(fc_plain), n)
    weights = [p.detach().clone() for p in wd_model.parameters()]
    for w in weights:
        w.grad = torch.randn_like(w)
    sgd = dict(lr=0.1, momentum=0.9, nesterov=True)
    decayed = [w for w in weights if w.dim() > 1]
    rest = [w for w in weights if w.dim() <= 1]
    with_wd = torch.optim.SGD([dict(params=decayed, weight_decay=1e-4), dict(params=rest)], **sgd)
    no_wd = torch.optim.SGD(weights, **sgd)
    with_wd.step(), no_wd.step()  # momentum buffers
    step = paired_times(with_wd.step, no_wd.step, n)
    med = statistics.median
    return dict(fixnorm_fc_extra_ms=(med(fc['a']) - med(fc['b'])) * 1e3,
                plain_fc_ms=med(fc['b']) * 1e3,
                weight_decay_term_ms=(med(step['a']) - med(step['b'])) * 1e3)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration):
        pass
    return f'{cpu}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), CPU'


def format_results(results: List[dict], args) -> str:
    lines = [f'FixNorm overhead on {machine()} (no GPU here); batch {args.batch} x '
             f'{args.size}px, {args.micro_repeats} rescale/step pairs; '
             'ratio = median(A) / median(B) of CPU time [IQR of per-pair ratios], '
             'then the same in wall-clock time']
    for r in results:
        m, it = r['rescale_vs_step'], r['iter_fixnorm_vs_wd']
        lines += [
            f"{r['model']}: {r['params'] / 1e6:.2f}M parameters, fixed set "
            f"{r['fixed_params'] / 1e6:.2f}M in {r['fixed_tensors']} tensors",
            f"  rescale / SGD-Nesterov step : {m['ratio']:.3f} "
            f"[{m['pair_q1']:.3f}, {m['pair_q3']:.3f}]  ({m['median_a'] * 1e3:.2f} ms / "
            f"{m['median_b'] * 1e3:.2f} ms)  wall {m['ratio_wall']:.3f}  target <= 0.5: "
            f"{'met' if m['ratio'] <= 0.5 else 'MISSED'}",
            f"  iteration FixNorm / WD      : {it['ratio']:.4f} "
            f"[{it['pair_q1']:.4f}, {it['pair_q3']:.4f}]  ({it['median_a'] * 1e3:.1f} ms / "
            f"{it['median_b'] * 1e3:.1f} ms, {it['pairs']} pairs)  wall {it['ratio_wall']:.4f} "
            f"[{it['pair_q1_wall']:.4f}, {it['pair_q3_wall']:.4f}]  target <= 1.01: "
            f"{'met' if it['ratio'] <= 1.01 else 'MISSED'}"]
        b = r['breakdown']
        extra = b['fixnorm_fc_extra_ms'] + b['rescale_ms'] - b['weight_decay_term_ms']
        lines.append(
            f"  where they differ (ms)      : FixNorm-FC fwd+bwd {b['fixnorm_fc_extra_ms']:+.2f} "
            f"(plain FC {b['plain_fc_ms']:.2f}), rescale {b['rescale_ms']:+.2f}, no "
            f"weight-decay term {-b['weight_decay_term_ms']:+.2f}  => expected ratio "
            f"{1 + extra / (it['median_b'] * 1e3):.4f}")
    return '\n'.join(lines)


def main(argv=None) -> List[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--smoke', action='store_true', help='tiny batch, few repeats (seconds)')
    p.add_argument('--models', nargs='+', default=list(MODELS), choices=list(MODELS))
    p.add_argument('--batch', type=int, default=8)
    p.add_argument('--size', type=int, default=224)
    p.add_argument('--repeats', type=int, default=10, help='least iteration pairs')
    p.add_argument('--budget', type=float, default=60.0,
                   help='seconds of iteration pairs per model (more pairs, less noise)')
    p.add_argument('--micro-repeats', type=int, default=50, help='rescale/step pairs')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', default=None, help='also write the report to this file')
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.size, args.repeats, args.micro_repeats, args.warmup = 2, 32, 3, 5, 1
        args.budget = 0.0
    torch.set_num_threads(args.threads)
    from mmengine.logging import MMLogger
    # the current logger: keeps FixNorm's startup table (INFO) out of the report
    MMLogger.get_instance(f'overhead_{time.time_ns()}', log_level='WARNING')
    t0 = time.perf_counter()
    results = [bench_model(name, args) for name in args.models]
    text = (format_results(results, args) + f'\nwall time {time.perf_counter() - t0:.0f} s; '
            'command: python benchmarks/overhead.py '
            + ' '.join(sys.argv[1:] if argv is None else argv))
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text + '\n')
    return results


if __name__ == '__main__':
    main()
