"""Whole-model inference speed of OpenMMLab configs (detectors and segmentors), interleaved.

Each config's model (random weights, no download) runs ``model.predict`` on the same random image,
in one or more :data:`VARIANTS`: ``eager`` (as the config builds it), ``fast``
(:func:`shvit_mm.inference.enable_fast_inference`: BatchNorm folding, channels-last, fp32) and
``fast-amp`` (the same in mixed precision: bf16 on CPUs with AVX-512 BF16 or AMX, fp16 on CUDA)
and ``onnxruntime`` (the same weights exported by :func:`shvit_mm.inference.deploy_onnx.export_onnx`,
run by ONNX Runtime on the CPU with the benchmark's thread count, MMDeploy's post-processing after
it). During each call the time inside each part's ``forward`` is recorded (:data:`PART_MODULES`;
an exported model's whole graph is one part); the rest is post-processing (box decoding, NMS, mask pasting, a segmentor's resize and argmax). Random
weights leave a detector with a random number of detections, so ``detections=N`` fixes it: score
threshold 0 and at most N per image, the load of a busy picture.
"""
from __future__ import annotations

import os
import statistics
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence

import torch

from shvit_mm.apis.config import build_model, codebase_of, read_config
from shvit_mm.inference import enable_fast_inference, submodules

from .complexity import config_complexity, parse_shape
from .harness import Benchmark, PartTimer, markdown_table, synthetic_batch


#: timed parts: name -> the dotted sub-modules whose forward time it sums (ModuleLists expanded)
PART_MODULES = {
    'backbone': ('backbone', ),
    'neck': ('neck', ),
    'dense_heads': ('rpn_head', 'bbox_head', 'decode_head', 'encoder', 'decoder'),
    'roi_extract': ('roi_head.bbox_roi_extractor', 'roi_head.mask_roi_extractor'),
    'roi_heads': ('roi_head.bbox_head', 'roi_head.mask_head'),
    'onnx_graph': ('wrapper', ),
}
VARIANTS = ('eager', 'fast', 'fast-amp', 'onnxruntime')


def fix_detection_count(cfg: Any, detections: int) -> None:
    """Score threshold 0 and at most ``detections`` boxes per image in a detector's test config
    (two-stage ``test_cfg.rcnn``, single-stage ``test_cfg``); DETR-style configs keep theirs."""
    test_cfg = cfg.model.get('test_cfg') or {}
    target = test_cfg.get('rcnn') if test_cfg.get('rcnn') is not None else test_cfg
    if 'score_thr' in target:
        target.update(score_thr=0.0, max_per_img=int(detections))


@dataclass
class ModelSpeed(Benchmark):
    """Time ``configs``, each in every one of ``variants``, side by side at ``shape``.
    ``reference`` names a config (or label) whose eager variant the speed-ups divide by (default:
    the last config)."""
    configs: Sequence[str] = ()
    shape: Sequence[int] = (512, 512)
    reference: Optional[str] = None
    count_flops: bool = True
    variants: Sequence[str] = ('eager', )
    detections: Optional[int] = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f'unknown variants {unknown}; choose from {VARIANTS}')
        if 'onnxruntime' in self.variants and self.device != 'cpu':
            raise ValueError(f"the 'onnxruntime' variant runs on the CPU; got device={self.device}")
        self.shape = parse_shape(list(self.shape))

    def measure(self) -> Dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix='model_speed_onnx_') as tmp:
            return self._measure(tmp)

    def _onnx_model(self, cfg: Any, model: torch.nn.Module, work_dir: str) -> torch.nn.Module:
        """``model``'s weights exported at the benchmark's shape and loaded in ONNX Runtime."""
        from shvit_mm.inference.deploy_onnx import build_onnx_model, export_onnx
        os.makedirs(work_dir)
        checkpoint = os.path.join(work_dir, 'weights.pth')
        torch.save(dict(state_dict=model.state_dict()), checkpoint)
        onnx = export_onnx(cfg, checkpoint, work_dir, shape=self.shape)
        return build_onnx_model(cfg, onnx, threads=self.threads)

    def _measure(self, tmp: str) -> Dict[str, Any]:
        (h, w), calls, info = self.shape, {}, {}
        for config in self.configs:
            base = '/'.join(config.replace('\\', '/').split('/')[-2:]).replace('.py', '')
            cfg = read_config(config)
            scope = codebase_of(cfg)
            if scope == 'mmdet' and self.detections:
                fix_detection_count(cfg, self.detections)
            x, samples, padded = synthetic_batch(cfg, (h, w), device=self.device)
            flops = {}
            if self.count_flops:
                self.say(f'counting FLOPs of {base}')
                c = config_complexity(cfg, (h, w))
                flops = dict(flops=c['flops'], params=c['params'], by_module=c['by_module'])
            for variant in self.variants:
                label = base if variant == 'eager' else f'{base} [{variant}]'
                self.say(f'building {label} ({scope})')
                torch.manual_seed(0)
                model = build_model(cfg, device=self.device)
                if variant == 'onnxruntime':
                    model = self._onnx_model(cfg, model, os.path.join(tmp, str(len(calls))))
                fast = (enable_fast_inference(model, amp=variant == 'fast-amp')
                        if variant in ('fast', 'fast-amp') else None)
                timer = PartTimer({k: [m for p in v for m in submodules(model, p)]
                                   for k, v in PART_MODULES.items()}, self.device)
                run = model.predict if variant != 'onnxruntime' else model.forward
                calls[label] = lambda t=timer, f=run, x=x, s=samples: t(lambda: f(x, s))
                info[label] = dict(config=config, base=base, variant=variant, codebase=scope,
                                   model=type(model).__name__, padded=padded, fast=fast, **flops,
                                   parts_present=[k for k, v in PART_MODULES.items()
                                                  if any(submodules(model, p) for p in v)])
        with torch.no_grad():
            times = self.interleave(calls, keep=True)
        rows = []
        for label, t in times.items():
            per_call = [dict(parts, total=wall, cpu=cpu, post=max(0.0, wall - sum(parts.values())))
                        for parts, wall, cpu in zip(t['returns'], t['wall'], t['cpu'])]
            rows.append(dict(label=label, **info[label], times=per_call, median={
                k: statistics.median(c[k] for c in per_call) for k in per_call[0]}))
        ref_key = self.reference or (self.configs[-1] if self.configs else None)
        ref = next((r for r in rows if r['variant'] == 'eager'
                    and ref_key in (r['config'], r['base'], r['label'])), None)
        for r in rows:
            own = next((o for o in rows if o['base'] == r['base'] and o['variant'] == 'eager'), None)
            total = r['median']['total']
            r['speedup_vs_eager'] = own['median']['total'] / total if own else None
            r['speedup_vs_reference'] = ref['median']['total'] / total if ref else None
        return dict(reference=ref['label'] if ref else None, rows=rows)

    @staticmethod
    def markdown(result: Dict[str, Any]) -> str:
        """One timing table (medians, ms) and one complexity table."""
        cfg, env = result['config'], result['env']
        (h, w), det = cfg['shape'], cfg['detections']
        lines = [f'{h}x{w}, {cfg["device"]}, {env.get("threads")} thread(s), '
                 f'{cfg["reps"]} interleaved repetitions after {cfg["warmup"]} warm-up'
                 + (f', detectors fixed at {det} detections' if det else '') + '.', '']

        def ms(r, k):
            return f'{r["median"][k] * 1e3:.0f}' if k in r['parts_present'] or k == 'post' else '-'

        def x(v):
            return '-' if v is None else f'{v:.2f}x'

        lines += markdown_table(
            ['model', 'backbone', 'neck', 'dense heads', 'RoI extract', 'RoI heads', 'ONNX graph',
             'post',
             'total ms', 'CPU ms', 'vs own eager', f'vs {result["reference"]}'],
            [[r['label']] + [ms(r, k) for k in list(PART_MODULES) + ['post']]
             + [f'{r["median"]["total"] * 1e3:.0f}', f'{r["median"]["cpu"] * 1e3:.0f}',
                x(r['speedup_vs_eager']), x(r['speedup_vs_reference'])] for r in result['rows']])
        firsts = {}  # one complexity row per config, whatever its variants
        for r in (r for r in result['rows'] if 'flops' in r):
            firsts.setdefault(r['base'], r)
        if firsts:
            rows = []
            for r in firsts.values():
                mods = r['by_module']
                heads = [v for k, v in mods.items() if k not in ('backbone', 'neck')]
                parts = [mods.get('backbone', {}), mods.get('neck', {}),
                         dict(params=sum(v['params'] for v in heads),
                              flops=sum(v['flops'] for v in heads))]
                rows.append([r['base'], f'{r["params"] / 1e6:.2f}']
                            + [_num(p.get('params'), 1e6, '.2f') for p in parts]
                            + [f'{r["flops"] / 1e9:.1f}']
                            + [_num(p.get('flops'), 1e9, '.1f') for p in parts])
            lines += [''] + markdown_table(['model', 'params total (M)', 'backbone', 'neck', 'heads',
                                            'GMACs total', 'backbone', 'neck', 'heads'], rows)
        return '\n'.join(lines)


def _num(n: Optional[float], unit: float, fmt: str) -> str:
    return '' if n is None else format(n / unit, fmt)
