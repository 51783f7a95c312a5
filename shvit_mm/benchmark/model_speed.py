"""Whole-model inference speed of OpenMMLab configs (detectors and segmentors), interleaved.

Every model is built by :func:`shvit_mm.apis.config.build_model` (random weights, no download) and
run on the same random image of the requested size, padded as its data preprocessor pads it at
test time. Each config can run in several *variants*, built side by side and timed in the same
interleaved loop:

* ``eager``: the model as the config builds it;
* ``fast``: :func:`shvit_mm.engine.fast_inference.enable_fast_inference` (BatchNorm folding,
  channels-last), fp32;
* ``fast-amp``: the same in mixed precision (bf16 on CPUs with AVX-512 BF16 or AMX, fp16 on CUDA).

One timed call per model and repetition, ``model.predict(x, data_samples)``, the whole inference;
during it the time spent inside each part's ``forward`` is recorded (:data:`PARTS`: backbone, neck,
dense heads -- RPN, RetinaNet head, decode head, DETR encoder / decoder and head --, RoI feature
extraction and RoI heads) and the rest is *post-processing* (anchor / box decoding, NMS, mask
pasting, a segmentor's resize and argmax). Random weights would leave a detector with a random
number of detections, so ``detections=N`` (default 100) fixes it: score threshold 0 and at most N
per image, the load of a busy picture (the mask head then runs on N RoIs).

Reported per model: medians of wall-clock time per part and in total, process CPU time in total,
the speed-up against its own eager variant and against a reference model, and FLOPs / parameters
of the backbone, neck and heads (:func:`shvit_mm.benchmark.complexity.config_complexity`).
"""
from __future__ import annotations

import functools
import json
import os
import statistics
import time
from typing import Any, Callable, Dict, Optional, Sequence

import torch
import torch.nn as nn

from shvit_mm.apis.config import build_model, codebase_of, read_config
from shvit_mm.engine.amp import submodules, wrap_forward
from shvit_mm.engine.fast_inference import enable_fast_inference

from .complexity import _dummy_input, config_complexity, parse_shape
from .detr_speed import _sync
from .latency import environment_info

__all__ = ['PARTS', 'VARIANTS', 'run_model_speed', 'format_model_speed', 'write_json',
           'fix_detection_count']

#: timed parts: name -> the dotted sub-modules whose forward time it sums (ModuleLists expanded)
PARTS = {
    'backbone': ('backbone', ),
    'neck': ('neck', ),
    'dense_heads': ('rpn_head', 'bbox_head', 'decode_head', 'encoder', 'decoder'),
    'roi_extract': ('roi_head.bbox_roi_extractor', 'roi_head.mask_roi_extractor'),
    'roi_heads': ('roi_head.bbox_head', 'roi_head.mask_head'),
}
VARIANTS = ('eager', 'fast', 'fast-amp')


def _label(config: str) -> str:
    name = config.replace('\\', '/')
    parts = name.split('/')
    return '/'.join(parts[-2:]).replace('.py', '')


def fix_detection_count(cfg, detections: int) -> None:
    """Score threshold 0 and at most ``detections`` boxes per image in a detector's test config
    (two-stage ``test_cfg.rcnn``, single-stage ``test_cfg``); DETR-style configs keep theirs."""
    test_cfg = cfg.model.get('test_cfg')
    if not test_cfg:
        return
    target = test_cfg.get('rcnn') if test_cfg.get('rcnn') is not None else test_cfg
    if 'score_thr' in target:
        target['score_thr'] = 0.0
        target['max_per_img'] = int(detections)


class _PartClock:
    """Adds the wall time spent in each part's ``forward`` while ``active``.

    Wraps the instance's ``forward`` (so direct ``self.forward()`` calls, as in MMSegmentation's
    decode heads, are counted too); a part nested inside another counted part is not counted
    twice (the outermost call wins)."""

    def __init__(self, model: nn.Module, device: str) -> None:
        self.device = device
        self.active = False
        self.depth = 0
        self.elapsed = {name: 0.0 for name in PARTS}
        self.present = []
        for name, paths in PARTS.items():
            mods = [m for p in paths for m in submodules(model, p)]
            if mods:
                self.present.append(name)
            for m in mods:
                wrap_forward(m, functools.partial(self._timed, name))

    def _timed(self, name, original, *args, **kwargs):
        if not self.active or self.depth:
            return original(*args, **kwargs)
        _sync(self.device)
        self.depth += 1
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _sync(self.device)
            self.elapsed[name] += time.perf_counter() - start
            self.depth -= 1

    def run(self, fn: Callable[[], object]) -> Dict[str, float]:
        self.elapsed = {name: 0.0 for name in PARTS}
        _sync(self.device)
        wall, cpu = time.perf_counter(), time.process_time()
        self.active = True
        try:
            fn()
        finally:
            self.active = False
        _sync(self.device)
        out = dict(self.elapsed)
        out['total'] = time.perf_counter() - wall
        out['post'] = max(0.0, out['total'] - sum(self.elapsed.values()))
        out['cpu'] = time.process_time() - cpu
        return out


def run_model_speed(configs: Sequence[str], shape: Sequence[int] = (512, 512), reps: int = 5,
                    warmup: int = 1, threads: Optional[int] = 1, device: str = 'cpu',
                    reference: Optional[str] = None, count_flops: bool = True,
                    variants: Sequence[str] = ('eager', ), detections: Optional[int] = 100,
                    progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Time ``configs`` (each in every one of ``variants``) side by side; returns a JSON-able dict
    (see :func:`format_model_speed`). ``reference`` names a config (or label) whose eager variant
    the speed-ups divide by (default: the last config)."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f'unknown variants {unknown}; choose from {VARIANTS}')
    if threads:
        torch.set_num_threads(int(threads))
    h, w = parse_shape(list(shape))
    say = progress or (lambda msg: None)
    clocks, calls, info = {}, {}, {}
    for config in configs:
        base = _label(config)
        cfg = read_config(config)
        scope = codebase_of(cfg)
        if scope == 'mmdet' and detections:
            fix_detection_count(cfg, detections)
        x, samples, padded = _dummy_input(cfg, scope, h, w)
        x = x.to(device)
        flops = {}
        if count_flops:
            say(f'counting FLOPs of {base}')
            c = config_complexity(cfg, (h, w))
            flops = dict(flops=c['flops'], params=c['params'], by_module=c['by_module'])
        for variant in variants:
            label = base if variant == 'eager' else f'{base} [{variant}]'
            say(f'building {label} ({scope})')
            torch.manual_seed(0)
            model = build_model(cfg, device=device).eval()
            report = None
            if variant != 'eager':
                report = enable_fast_inference(model, amp=variant == 'fast-amp')
            clocks[label] = _PartClock(model, device)
            calls[label] = lambda m=model, x=x, s=samples: m.predict(x, s)
            info[label] = dict(config=config, base=base, variant=variant, codebase=scope,
                               model=type(model).__name__, padded=padded, fast=report, **flops)
    labels = list(clocks)
    times = {label: [] for label in labels}
    with torch.no_grad():
        for rep in range(warmup + reps):
            order = labels if rep % 2 == 0 else labels[::-1]
            for label in order:
                t = clocks[label].run(calls[label])
                if rep >= warmup:
                    times[label].append(t)
            say(f'repetition {rep + 1}/{warmup + reps}' + (' (warm-up)' if rep < warmup else ''))
    rows = []
    for label in labels:
        keys = list(times[label][0]) if times[label] else []
        med = {k: statistics.median(t[k] for t in times[label]) for k in keys}
        rows.append(dict(label=label, **info[label], parts_present=clocks[label].present,
                         times=times[label], median=med))
    ref_key = reference or (configs[-1] if configs else None)
    ref = next((r for r in rows if r['variant'] == 'eager'
                and ref_key in (r['config'], r['base'], r['label'])), None)
    for r in rows:
        own = next((o for o in rows if o['base'] == r['base'] and o['variant'] == 'eager'), None)
        total = r['median'].get('total')
        r['speedup_vs_eager'] = own['median']['total'] / total if own and total else None
        r['speedup_vs_reference'] = ref['median']['total'] / total if ref and total else None
    return dict(shape=(h, w), reps=reps, warmup=warmup, device=device, variants=list(variants),
                detections=detections, reference=ref['label'] if ref else None, rows=rows,
                env=environment_info(device, threads))


def _g(n: Optional[float]) -> str:
    return '' if n is None else f'{n / 1e9:.1f}'


def _m(n: Optional[float]) -> str:
    return '' if n is None else f'{n / 1e6:.2f}'


def format_model_speed(result: Dict[str, Any], command: Optional[str] = None) -> str:
    """Markdown: one timing table (medians, ms) and one complexity table."""
    h, w = result['shape']
    env = result['env']
    lines = []
    if command:
        lines += [f'`{command}`', '']
    det = result.get('detections')
    lines.append(f'{h}x{w}, {result["device"]}, {env.get("threads")} thread(s), '
                 f'{result["reps"]} interleaved repetitions after {result["warmup"]} warm-up'
                 + (f', detectors fixed at {det} detections' if det else '')
                 + f'; CPU: {env.get("cpu", "?")}, torch {env.get("torch", "?")}.')
    lines += ['', f'| model | backbone | neck | dense heads | RoI extract | RoI heads | post | '
                  f'total ms | CPU ms | vs own eager | vs {result["reference"]} |',
              '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|']

    def ms(r, k):
        return f'{r["median"][k] * 1e3:.0f}' if k in r['parts_present'] or k == 'post' else '-'

    for r in result['rows']:
        m = r['median']
        lines.append(
            f'| {r["label"]} | {ms(r, "backbone")} | {ms(r, "neck")} | {ms(r, "dense_heads")} | '
            f'{ms(r, "roi_extract")} | {ms(r, "roi_heads")} | {ms(r, "post")} | '
            f'{m["total"] * 1e3:.0f} | {m["cpu"] * 1e3:.0f} | {r["speedup_vs_eager"]:.2f}x | '
            + (f'{r["speedup_vs_reference"]:.2f}x |' if r['speedup_vs_reference'] else '- |'))
    seen = set()
    if any('flops' in r for r in result['rows']):
        lines += ['', '| model | params total (M) | backbone | neck | heads | GMACs total | backbone | '
                      'neck | heads |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in result['rows']:
            if 'flops' not in r or r['base'] in seen:
                continue
            seen.add(r['base'])
            mods = r['by_module']
            heads = [k for k in mods if k not in ('backbone', 'neck')]
            hp = sum(mods[k]['params'] for k in heads)
            hf = sum(mods[k]['flops'] for k in heads)
            lines.append(
                f'| {r["base"]} | {_m(r["params"])} | {_m(mods.get("backbone", {}).get("params"))} | '
                f'{_m(mods.get("neck", {}).get("params"))} | {_m(hp)} | {_g(r["flops"])} | '
                f'{_g(mods.get("backbone", {}).get("flops"))} | {_g(mods.get("neck", {}).get("flops"))} | '
                f'{_g(hf)} |')
    return '\n'.join(lines) + '\n'


def write_json(result: Dict[str, Any], path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(result, f, indent=1, default=str)
    return path
