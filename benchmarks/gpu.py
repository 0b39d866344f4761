"""FixNorm's cost on CUDA, in one prepared run (about 3 minutes on one GPU;
``benchmarks/gpu.sh`` runs it and skips cleanly without CUDA).

Writes ``<out>.md`` and ``<out>.json`` (default ``docs/results/gpu``), section
by section, so that a run cut short keeps what it measured:

1. **rescale vs SGD-Nesterov**: ``NormFixer.rescale()`` over ResNet50-D's fixed
   set (every conv + the FixNorm-FC direction) against torch's default
   (foreach on CUDA), ``foreach=True`` and ``fused=True`` SGD-Nesterov steps
   over all parameters; and the rescale with 4x the parameters and with the
   same parameters in 100x more tensors.
2. **full iterations, FixNorm vs weight decay**: ``train_step`` of mmpretrain's
   ResNet50-D (FixNorm-FC + ``FixNorm`` against plain FC + weight decay 1e-4,
   synthetic ImageNet-sized batch) and of the repository's RetinaNet R50-FPN
   configs (``configs/coco/retinanet_r50_fpn_fixnorm_90k_coco.py`` against the
   weight-decay baseline ``retinanet_r50_fpn_wn_90k_coco.py``, synthetic COCO-sized
   images, no pretrained weights), each in fp32 and with AMP fp16
   (``AmpOptimWrapper``). FixNorm runs twice: with the default
   ``check_finite_interval='auto'`` (a host sync every 100 steps on a GPU) and
   with ``check_finite_interval=1`` (a sync every step), to measure what the
   check costs.
3. **skipped fp16 steps are not rescaled**: a FixNorm model under
   ``AmpOptimWrapper`` (fp16) gets an overflowing loss; the loss scaler skips
   the step, and the weights must stay bit-identical, the controller must not
   count a step, the scale must back off; the next normal step must rescale to
   the reference norm. For the default SGD and for ``fused=True`` (where
   ``GradScaler`` hands the optimizer ``found_inf`` and the rescale must use a
   factor of exactly 1).

Timings are wall-clock with ``torch.cuda.synchronize()`` around each timed
block, blocks interleaved (A B C, C B A, ...), medians with quartiles.

    bash benchmarks/gpu.sh                             # CUDA; else prints "skipped"
    python benchmarks/gpu.py --device cpu --smoke --out /tmp/gpu   # the logic, on CPU
"""
import argparse
import contextlib
import functools
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
import traceback
from typing import Callable, Dict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(ROOT, 'benchmarks'))

import torch  # noqa: E402

SMOKE = dict(cls_model='MobileNetV2', cls_batch=2, cls_size=32, det_batch=1,
             det_size=(64, 96), warmup=1, block=1, rounds=2, micro_block=1, micro_rounds=3,
             scale_params=2, scale_tensors=4)
FULL = dict(cls_model='ResNet50-D', cls_batch=64, cls_size=224, det_batch=2,
            det_size=(800, 1216), warmup=5, block=10, rounds=5, micro_block=20,
            micro_rounds=30, scale_params=4, scale_tensors=100)


# ----------------------------------------------------------------------------- helpers
def sync_fn(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith('cuda') else (lambda: None)


def timed_blocks(fns: Dict[str, Callable], rounds: int, block: int, device: str) -> dict:
    """Each fn run ``block`` times per timed block, blocks interleaved; ms per call."""
    sync = sync_fn(device)
    keys = list(fns)
    t = {k: [] for k in keys}
    for i in range(rounds):
        for k in (keys if i % 2 == 0 else keys[::-1]):
            sync()
            w = time.perf_counter()
            for _ in range(block):
                fns[k]()
            sync()
            t[k].append((time.perf_counter() - w) / block * 1e3)
    return t


def ratio(t: dict, a: str, b: str) -> dict:
    per_round = sorted(x / y for x, y in zip(t[a], t[b]))
    q = statistics.quantiles(per_round, n=4) if len(per_round) >= 2 else per_round * 3
    return dict(ratio=statistics.median(t[a]) / statistics.median(t[b]), q1=q[0], q3=q[2],
                a_ms=statistics.median(t[a]), b_ms=statistics.median(t[b]))


def fmt(r: dict, digits: int = 3) -> str:
    return (f"{r['ratio']:.{digits}f} [{r['q1']:.{digits}f}, {r['q3']:.{digits}f}] "
            f"({r['a_ms']:.3g} / {r['b_ms']:.3g} ms)")


@contextlib.contextmanager
def amp_on_cpu():
    """``--device cpu`` only: let mmengine's AmpOptimWrapper run on CPU tensors
    (as tests/test_amp.py does): its CUDA assertion and its GradScaler are
    replaced *in its module* for the duration; autocast is then CPU bf16."""
    from mmengine.optim.optimizer import amp_optimizer_wrapper as m
    saved = m.is_cuda_available, m.GradScaler
    m.is_cuda_available = lambda: True
    m.GradScaler = functools.partial(torch.amp.GradScaler, 'cpu')
    try:
        yield
    finally:
        m.is_cuda_available, m.GradScaler = saved


def amp_dtype(device: str) -> str:
    return 'float16' if device.startswith('cuda') else 'bfloat16'


def to_device(data, device: str):
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, list):
        return [to_device(v, device) for v in data]
    if hasattr(data, 'to'):
        return data.to(device)
    return data


# ----------------------------------------------------------------------------- 1. rescale
def bench_rescale(device: str, s: dict) -> dict:
    import overhead
    from fixnorm_mm.norm_control import NormFixer
    model = overhead.build_classifier('ResNet50-D', fixnorm_fc=True).to(device)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    fixed = {n: p for n, p in model.named_parameters() if p.dim() > 1}
    fixer = NormFixer({'fixed': fixed})
    out = dict(params=sum(p.numel() for p in params), fixed_params=sum(
        p.numel() for p in fixed.values()), fixed_tensors=len(fixed))
    steps = overhead.sgd_variants(params, device)

    t = timed_blocks(dict(rescale=fixer.rescale, **{k: o.step for k, o in steps.items()}),
                     s['micro_rounds'], s['micro_block'], device)
    out['rescale_vs_step'] = {k: ratio(t, 'rescale', k) for k in steps}
    # scaling: the same shapes 4x longer, and split into 100x more tensors
    sizes = [p.numel() for p in fixed.values()]
    sets = {'x1': sizes, f"params x{s['scale_params']}": [n * s['scale_params'] for n in sizes],
            f"tensors x{s['scale_tensors']}": [
                len(c) for n in sizes for c in torch.arange(n).tensor_split(s['scale_tensors'])
                if len(c)]}
    del model, params, steps
    fns, info = {}, {}
    for label, ns in sets.items():
        ts = [torch.randn(n, device=device) for n in ns]
        for x in ts:
            x.grad = torch.randn_like(x) * 1e-3
        f = NormFixer({'fixed': {str(i): x for i, x in enumerate(ts)}})
        opt = torch.optim.SGD(ts, lr=1e-3, momentum=0.9, nesterov=True, foreach=True)
        opt.step()
        fns[f'{label}/rescale'], fns[f'{label}/step'] = f.rescale, opt.step
        info[label] = dict(tensors=len(ts), params=sum(ns))
    t = timed_blocks(fns, s['micro_rounds'], s['micro_block'], device)
    med = {k: statistics.median(v) for k, v in t.items()}
    out['scaling'] = {label: dict(info[label], rescale_ms=med[f'{label}/rescale'],
                                  step_ms=med[f'{label}/step'],
                                  rescale_rel=med[f'{label}/rescale'] / med['x1/rescale'])
                      for label in sets}
    return out


# ----------------------------------------------------------------------------- 2. iterations
def classification_variants(device: str, amp: bool, s: dict) -> Dict[str, tuple]:
    import overhead
    from mmengine.optim import build_optim_wrapper
    data = overhead.make_batch(s['cls_batch'], s['cls_size'])
    data['inputs'] = data['inputs'].to(device)
    out = {}
    for label, fixnorm, check in (('wd', False, None), ('fixnorm', True, 'auto'),
                                  ('fixnorm_check1', True, 1)):
        torch.manual_seed(0)
        model = overhead.build_classifier(s['cls_model'], fixnorm_fc=fixnorm).to(device)
        if fixnorm:
            cfg = overhead.fixnorm_wrapper_cfg(amp=amp)
            cfg['norm_control']['check_finite_interval'] = check
        else:
            cfg = overhead.wd_wrapper_cfg(amp=amp)
        if amp:
            cfg['dtype'] = amp_dtype(device)
        out[label] = (model, build_optim_wrapper(model, cfg), data)
    return out


def detection_variants(device: str, amp: bool, s: dict) -> Dict[str, tuple]:
    from mmdet.testing import demo_mm_inputs
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope

    import fixnorm_mm.detection  # noqa: F401  (WNRetinaHead, FixNormRetinaHead)
    from mmdet.registry import MODELS
    h, w = s['det_size']
    data = demo_mm_inputs(batch_size=s['det_batch'], image_shapes=[(3, h, w)] * s['det_batch'],
                          num_items=[8] * s['det_batch'], num_classes=80)
    data = to_device(data, device)
    out = {}
    for label, name, check in (('wd', 'retinanet_r50_fpn_wn_90k_coco.py', None),
                               ('fixnorm', 'retinanet_r50_fpn_fixnorm_90k_coco.py', 'auto'),
                               ('fixnorm_check1', 'retinanet_r50_fpn_fixnorm_90k_coco.py', 1)):
        cfg = Config.fromfile(osp.join(ROOT, 'configs', 'coco', name))
        cfg.model.backbone.init_cfg = None  # synthetic data: no ImageNet weights to fetch
        torch.manual_seed(0)
        with DefaultScope.overwrite_default_scope('mmdet'):
            model = MODELS.build(cfg.model)
            model.init_weights()
            model = model.to(device).train()
            ow = cfg.optim_wrapper.to_dict()
            if check is not None:
                ow['norm_control']['check_finite_interval'] = check
            if amp:
                ow.update(type='AmpOptimWrapper', dtype=amp_dtype(device), loss_scale='dynamic')
            out[label] = (model, build_optim_wrapper(model, ow), data)
    return out


def bench_iterations(build: Callable, device: str, amp: bool, s: dict) -> dict:
    variants = build(device, amp, s)
    for model, wrapper, data in variants.values():
        for _ in range(s['warmup']):
            model.train_step(data, wrapper)
    t = timed_blocks({k: functools.partial(m.train_step, d, w)
                      for k, (m, w, d) in variants.items()}, s['rounds'], s['block'], device)
    fix_wrapper = variants['fixnorm'][1]
    out = dict(fixnorm_vs_wd=ratio(t, 'fixnorm', 'wd'),
               check1_vs_auto=ratio(t, 'fixnorm_check1', 'fixnorm'),
               check_interval_auto=fix_wrapper.norm_control.check_finite_interval,
               fixed_tensors=sum(len(p) for p in fix_wrapper.norm_control.fixer.params.values()),
               ms=dict((k, statistics.median(v)) for k, v in t.items()))
    del variants
    if device.startswith('cuda'):
        torch.cuda.empty_cache()
    return out


# ----------------------------------------------------------------------------- 3. skipped steps
def check_skipped_steps(device: str, fused: bool) -> dict:
    """An overflowing fp16 step leaves everything as it was; the next one rescales."""
    from torch import nn

    from fixnorm_mm.engine import NormControlOptimWrapperConstructor
    from fixnorm_mm.testing.toy import ToyNet
    torch.manual_seed(0)
    model = ToyNet().to(device)
    wrapper = NormControlOptimWrapperConstructor(dict(
        type='AmpOptimWrapper', dtype=amp_dtype(device), loss_scale=dict(init_scale=2.0 ** 10),
        optimizer=dict(type='SGD', lr=0.5, momentum=0.9, nesterov=True,
                       **(dict(fused=True) if fused else {})),
        norm_control=dict(type='FixNorm')))(model)
    x = torch.randn(8, 3, 8, 8, device=device)
    y = torch.arange(8, device=device) % 4

    def step(poison=False):
        with wrapper.optim_context(model):
            loss = nn.functional.cross_entropy(model(x), y)
        if poison:
            loss = loss * float('inf')
        wrapper.update_params(loss)

    step()
    step()
    ctrl = wrapper.norm_control
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    steps, scale = ctrl.steps, wrapper.loss_scaler.get_scale()
    step(poison=True)
    same = all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    # the default SGD is not stepped at all (GradScaler skips optimizer.step());
    # a fused one is stepped with found_inf, skips inside its kernel, and the
    # controller sees the step with skip=found_inf (factor exactly 1)
    result = dict(optimizer='SGD fused=True' if fused else 'SGD (default)',
                  weights_bit_identical=same,
                  controller_saw_step=ctrl.steps != steps,
                  scale_backed_off=wrapper.loss_scaler.get_scale() < scale)
    seen = ctrl.steps
    step()
    fixer = ctrl.fixer
    g = next(iter(fixer.reference_norms))
    rel = float(((fixer.norms()[g] - fixer.reference_norms[g]).abs()
                 / fixer.reference_norms[g]).max())
    result.update(next_step_counted=ctrl.steps == seen + 1,
                  next_step_changed_weights=not all(
                      torch.equal(p, before[n]) for n, p in model.named_parameters()),
                  next_step_norm_rel_error=rel,
                  check_finite_interval=ctrl.check_finite_interval)
    result['passed'] = bool(same and result['scale_backed_off'] and result['next_step_counted']
                            and result['next_step_changed_weights'] and rel < 1e-5)
    return result


# ----------------------------------------------------------------------------- report
def device_name(device: str) -> str:
    if device.startswith('cuda'):
        p = torch.cuda.get_device_properties(torch.device(device))
        return (f'{p.name} ({p.total_memory / 2 ** 30:.0f} GiB), torch {torch.__version__}, '
                f'CUDA {torch.version.cuda}')
    return f'CPU ({platform.machine()}), torch {torch.__version__} -- logic check, not a GPU run'


def markdown(res: dict) -> str:
    lines = [f"FixNorm on {res['device']}; command: `{res['command']}`; "
             f"{res.get('wall_s', 0):.0f} s.", '']
    r = res.get('rescale')
    if r:
        lines += ['### Rescale vs SGD-Nesterov step (ResNet50-D parameter set)', '',
                  f"{r['params'] / 1e6:.2f}M parameters; fixed set {r['fixed_params'] / 1e6:.2f}M "
                  f"in {r['fixed_tensors']} tensors. rescale / step = median ratio [quartiles] "
                  '(rescale / step ms).', '', '| SGD-Nesterov | rescale / step |',
                  '| --- | --- |']
        lines += [f'| {k} | {fmt(v)} |' for k, v in r['rescale_vs_step'].items()]
        lines += ['', '| set | tensors | parameters | rescale (ms) | x of x1 | foreach step (ms) |',
                  '| --- | --- | --- | --- | --- | --- |']
        lines += [f"| {k} | {v['tensors']} | {v['params'] / 1e6:.1f}M | {v['rescale_ms']:.3f} | "
                  f"{v['rescale_rel']:.2f} | {v['step_ms']:.3f} |" for k, v in r['scaling'].items()]
        lines.append('')
    its = res.get('iterations', {})
    if its:
        lines += ['### Full iterations (synthetic data)', '',
                  '| model | precision | FixNorm / WD | check every step / auto | '
                  "'auto' interval | ms per iteration (WD, FixNorm, FixNorm check=1) |",
                  '| --- | --- | --- | --- | --- | --- |']
        for key, v in its.items():
            if 'error' in v:
                lines.append(f'| {key} | | error: {v["error"]} | | | |')
                continue
            model, prec = key.split('/')
            lines.append(f"| {model} | {prec} | {fmt(v['fixnorm_vs_wd'], 4)} | "
                         f"{fmt(v['check1_vs_auto'], 4)} | {v['check_interval_auto']} | "
                         f"{v['ms']['wd']:.2f}, {v['ms']['fixnorm']:.2f}, "
                         f"{v['ms']['fixnorm_check1']:.2f} |")
        lines += ['', "'check every step / auto': FixNorm with `check_finite_interval=1` (a host "
                  "sync after every optimizer step) against the default `'auto'` (on a GPU, a "
                  'sync every 100 steps; the first non-finite step is remembered on the device '
                  'in between). `train_step` is timed without a Runner: inside mmengine\'s '
                  'Runner, `RuntimeInfoHook` reads the loss back to the host every iteration, '
                  'and `GradScaler` with a non-fused optimizer reads `found_inf` every step, so '
                  'there the extra sync costs at most what it costs here.', '']
    sk = res.get('skipped_steps')
    if sk:
        lines += ['### Skipped fp16 steps are not rescaled', '',
                  '| optimizer | passed | weights bit-identical | scale backed off | controller '
                  'saw a step | next step rescaled (rel. error) |',
                  '| --- | --- | --- | --- | --- | --- |']
        for v in sk:
            if 'error' in v:
                lines.append(f"| {v['optimizer']} | error: {v['error']} | | | | |")
                continue
            lines.append(f"| {v['optimizer']} | {v['passed']} | {v['weights_bit_identical']} | "
                         f"{v['scale_backed_off']} | {v['controller_saw_step']} | "
                         f"{v['next_step_counted'] and v['next_step_changed_weights']} "
                         f"({v['next_step_norm_rel_error']:.1e}) |")
        lines += ['', 'On overflow `GradScaler` does not call a plain optimizer\'s `step()` at all '
                  '(no step, no rescale); a `fused=True` optimizer is stepped with `found_inf` and '
                  'skips inside its kernel, and the controller sees that step with '
                  '`skip=found_inf`: its factor is exactly 1, so the weights stay bit-identical '
                  "('controller saw a step' is expected there)."]
    return '\n'.join(lines) + '\n'


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda')
    p.add_argument('--smoke', action='store_true', help='tiny sizes (the CPU logic check)')
    p.add_argument('--out', default=osp.join(ROOT, 'docs', 'results', 'gpu'))
    p.add_argument('--skip', nargs='*', default=[],
                   choices=['rescale', 'resnet', 'retinanet', 'skipped'])
    args = p.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        print('benchmarks/gpu.py: no CUDA device here: skipped (nothing measured, nothing '
              'written)')
        return {}
    s = dict(SMOKE if args.smoke else FULL)
    torch.manual_seed(0)
    if args.device.startswith('cuda'):
        torch.backends.cudnn.benchmark = True
    from mmengine.logging import MMLogger
    MMLogger.get_instance(f'gpu_{time.time_ns()}', log_level='WARNING')
    import fixnorm_mm  # noqa: F401
    t0 = time.perf_counter()
    res = dict(device=device_name(args.device), settings=s, command='python benchmarks/gpu.py '
               + ' '.join(sys.argv[1:] if argv is None else argv))
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)

    def save():
        res['wall_s'] = time.perf_counter() - t0
        with open(args.out + '.json', 'w') as f:
            json.dump(res, f, indent=1, default=str)
        with open(args.out + '.md', 'w') as f:
            f.write(markdown(res))

    def guarded(fn, *a):
        try:
            return fn(*a)
        except Exception as e:  # keep the other sections' results
            traceback.print_exc()
            return dict(error=f'{type(e).__name__}: {str(e).splitlines()[0][:200]}')

    cpu_amp = amp_on_cpu() if args.device == 'cpu' else contextlib.nullcontext()
    with cpu_amp:
        if 'rescale' not in args.skip:
            res['rescale'] = guarded(bench_rescale, args.device, s)
            save()
            print(f'[{time.perf_counter() - t0:.0f} s] rescale done', flush=True)
        res['iterations'] = {}
        for model, build in ((s['cls_model'], classification_variants),
                             ('RetinaNet R50-FPN', detection_variants)):
            if ('retinanet' if model.startswith('RetinaNet') else 'resnet') in args.skip:
                continue
            for amp in (False, True):
                key = f"{model}/{'AMP ' + amp_dtype(args.device) if amp else 'fp32'}"
                res['iterations'][key] = guarded(bench_iterations, build, args.device, amp, s)
                save()
                print(f'[{time.perf_counter() - t0:.0f} s] {key} done', flush=True)
        if 'skipped' not in args.skip:
            res['skipped_steps'] = [
                guarded(check_skipped_steps, args.device, fused) or {} for fused in (False, True)]
            for v, fused in zip(res['skipped_steps'], (False, True)):
                v.setdefault('optimizer', 'SGD fused=True' if fused else 'SGD (default)')
    save()
    print(markdown(res))
    print(f'wrote {args.out}.md and {args.out}.json')
    return res


if __name__ == '__main__':
    main()
