"""Whole-model inference speed of OpenMMLab configs (detectors and segmentors), interleaved.

Every model is built by :func:`shvit_mm.apis.config.build_model` (random weights, no download) and
run on the same random image of the requested size, padded as its data preprocessor pads at test
time. Per repetition every model runs, in alternating order, three timed calls:

* ``backbone``: ``model.backbone(x)``;
* ``features``: ``model.extract_feat(x)`` (backbone + neck);
* ``predict``: ``model.predict(x, data_samples)``, the whole inference (heads and post-processing:
  a segmentor's resize to the input size and argmax, a detector's box decoding and NMS).

Reported per model: medians of wall-clock and process CPU time, the parts derived from them
(neck = features - backbone, heads + post-processing = predict - features), and FLOPs / parameters
of the backbone, neck and heads (:func:`shvit_mm.benchmark.complexity.config_complexity`).
Ratios against a reference model come from the same run.
"""
from __future__ import annotations

import json
import os
import statistics
from typing import Any, Callable, Dict, Optional, Sequence

import torch

from shvit_mm.apis.config import build_model, codebase_of, read_config

from .complexity import _dummy_input, config_complexity, parse_shape
from .detr_speed import _timed
from .latency import environment_info

__all__ = ['PARTS', 'run_model_speed', 'format_model_speed', 'write_json']

PARTS = ('backbone', 'features', 'predict')


def _label(config: str) -> str:
    name = config.replace('\\', '/')
    parts = name.split('/')
    return '/'.join(parts[-2:]).replace('.py', '')


def run_model_speed(configs: Sequence[str], shape: Sequence[int] = (512, 512), reps: int = 5,
                    warmup: int = 1, threads: Optional[int] = 1, device: str = 'cpu',
                    reference: Optional[str] = None, count_flops: bool = True,
                    progress: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Time ``configs`` side by side; returns a JSON-able dict (see :func:`format_model_speed`)."""
    if threads:
        torch.set_num_threads(int(threads))
    h, w = parse_shape(list(shape))
    say = progress or (lambda msg: None)
    models, calls, info = {}, {}, {}
    for config in configs:
        label = _label(config)
        cfg = read_config(config)
        scope = codebase_of(cfg)
        say(f'building {label} ({scope})')
        model = build_model(cfg, device=device)
        x, samples, padded = _dummy_input(cfg, scope, h, w)
        x = x.to(device)
        models[label] = model
        calls[label] = dict(backbone=lambda m=model, x=x: m.backbone(x),
                            features=lambda m=model, x=x: m.extract_feat(x),
                            predict=lambda m=model, x=x, s=samples: m.predict(x, s))
        entry = dict(config=config, codebase=scope, model=type(model).__name__, padded=padded)
        if count_flops:
            say(f'counting FLOPs of {label}')
            c = config_complexity(cfg, (h, w))
            entry.update(flops=c['flops'], params=c['params'], by_module=c['by_module'])
        info[label] = entry
    labels = list(models)
    times = {label: {clock: {p: [] for p in PARTS} for clock in ('wall', 'cpu')} for label in labels}
    with torch.no_grad():
        for rep in range(warmup + reps):
            order = labels if rep % 2 == 0 else labels[::-1]
            for label in order:
                for part in PARTS:
                    wall, cpu = _timed(calls[label][part], device)
                    if rep >= warmup:
                        times[label]['wall'][part].append(wall)
                        times[label]['cpu'][part].append(cpu)
            say(f'repetition {rep + 1}/{warmup + reps}' + (' (warm-up)' if rep < warmup else ''))
    rows = []
    for label in labels:
        med = {clock: {p: statistics.median(v) for p, v in times[label][clock].items()}
               for clock in ('wall', 'cpu')}
        row = dict(label=label, **info[label], times=times[label], median=med)
        for clock in ('wall', 'cpu'):
            m = med[clock]
            row[f'{clock}_parts'] = dict(backbone=m['backbone'],
                                         neck=max(0.0, m['features'] - m['backbone']),
                                         heads_post=max(0.0, m['predict'] - m['features']),
                                         total=m['predict'])
        rows.append(row)
    reference = reference or (labels[-1] if labels else None)
    ref = next((r for r in rows if r['label'] == reference or r['config'] == reference), None)
    for r in rows:
        for clock in ('wall', 'cpu'):
            r[f'{clock}_speedup'] = (ref[f'{clock}_parts']['total'] / r[f'{clock}_parts']['total']
                                     if ref else None)
    return dict(shape=(h, w), reps=reps, warmup=warmup, device=device,
                reference=ref['label'] if ref else None, rows=rows,
                env=environment_info(device, threads))


def _g(n: Optional[float]) -> str:
    return '' if n is None else f'{n / 1e9:.1f}'


def _m(n: Optional[float]) -> str:
    return '' if n is None else f'{n / 1e6:.2f}'


def format_model_speed(result: Dict[str, Any], command: Optional[str] = None) -> str:
    """Markdown: one timing table (medians, ms; CPU time in brackets) and one complexity table."""
    h, w = result['shape']
    env = result['env']
    lines = []
    if command:
        lines += [f'`{command}`', '']
    lines.append(f'{h}x{w}, {result["device"]}, {env.get("threads")} thread(s), '
                 f'{result["reps"]} interleaved repetitions after {result["warmup"]} warm-up; '
                 f'CPU: {env.get("cpu", "?")}, torch {env.get("torch", "?")}.')
    lines += ['', f'| model | backbone ms | neck ms | heads + post ms | total ms | CPU ms | '
                  f'speed-up vs {result["reference"]} (wall / CPU) |',
              '|---|---:|---:|---:|---:|---:|---:|']
    for r in result['rows']:
        p, c = r['wall_parts'], r['cpu_parts']
        lines.append(f'| {r["label"]} | {p["backbone"] * 1e3:.0f} | {p["neck"] * 1e3:.0f} | '
                     f'{p["heads_post"] * 1e3:.0f} | {p["total"] * 1e3:.0f} | '
                     f'{c["total"] * 1e3:.0f} | {r["wall_speedup"]:.2f}x / {r["cpu_speedup"]:.2f}x |')
    if any('flops' in r for r in result['rows']):
        lines += ['', '| model | params total (M) | backbone | neck | heads | GMACs total | backbone | '
                      'neck | heads |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|']
        for r in result['rows']:
            if 'flops' not in r:
                continue
            mods = r['by_module']
            heads = [k for k in mods if k not in ('backbone', 'neck')]
            hp = sum(mods[k]['params'] for k in heads)
            hf = sum(mods[k]['flops'] for k in heads)
            lines.append(
                f'| {r["label"]} | {_m(r["params"])} | {_m(mods.get("backbone", {}).get("params"))} | '
                f'{_m(mods.get("neck", {}).get("params"))} | {_m(hp)} | {_g(r["flops"])} | '
                f'{_g(mods.get("backbone", {}).get("flops"))} | {_g(mods.get("neck", {}).get("flops"))} | '
                f'{_g(hf)} |')
    return '\n'.join(lines) + '\n'


def write_json(result: Dict[str, Any], path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(result, f, indent=1, default=str)
    return path
