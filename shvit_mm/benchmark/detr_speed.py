"""Speed and size of single-head against multi-head Deformable DETR, measured side by side.

Both detectors are built from their configs, share the weights wherever shapes agree and run on the
same input. The timed :data:`STAGES` are ``encoder`` (``forward_encoder``), ``decoder``
(``forward_decoder``), ``transformer`` (``forward_transformer``) and ``model`` (``predict``:
backbone to box decoding). The speed-up is ``median(multi) / median(single)``; the JSON also keeps
the median of the per-repetition ratios and every raw time."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from shvit_mm.apis.config import build_model, read_config
from shvit_mm.utils.cpu import cpu_model

from .harness import Benchmark, PartTimer, markdown_table, synthetic_batch


STAGES = ('encoder', 'decoder', 'transformer', 'model')
_PARAM_KEYS = ('total', 'trainable', 'transformer', 'encoder', 'decoder', 'backbone', 'neck',
               'bbox_head')


def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameter counts of the whole detector and of its parts (MMEngine's ``parameter_count``)."""
    from mmengine.analysis import parameter_count
    n = parameter_count(model)
    parts = {k: n.get(k, 0) for k in ('backbone', 'neck', 'encoder', 'decoder', 'bbox_head')}
    return dict(parts, total=n[''], other=n[''] - sum(parts.values()),
                transformer=parts['encoder'] + parts['decoder'],
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad))


def attention_layout(model: nn.Module) -> Dict[str, List[str]]:
    """``heads x head-dims`` of each multi-scale deformable attention, per encoder/decoder layer."""
    def describe(attn: nn.Module) -> str:
        return f'{attn.num_heads}x{attn.value_proj.out_features // attn.num_heads}'
    return dict(encoder=[describe(layer.self_attn) for layer in model.encoder.layers],
                decoder=[describe(layer.cross_attn) for layer in model.decoder.layers])


def share_weights(src: nn.Module, dst: nn.Module) -> List[str]:
    """Copy every tensor of ``src`` into ``dst`` where names and shapes agree (MMEngine's
    ``load_state_dict``, ``strict=False``); returns the names of ``dst`` tensors left as they
    were."""
    from mmengine.runner.checkpoint import load_state_dict
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    load_state_dict(dst, src_sd, strict=False, logger='silent')
    return sorted(k for k, v in dst_sd.items() if k not in src_sd or src_sd[k].shape != v.shape)


def _stage_fns(model: nn.Module, inputs: torch.Tensor, samples: list) -> Dict[str, Callable]:
    """Closures running each stage on precomputed inputs."""
    feats = model.extract_feat(inputs)
    enc_in, dec_in = model.pre_transformer(feats, samples)
    dec_in = dict(dec_in, **model.pre_decoder(**model.forward_encoder(**enc_in))[0])
    return dict(encoder=lambda: model.forward_encoder(**enc_in),
                decoder=lambda: model.forward_decoder(**dec_in),
                transformer=lambda: model.forward_transformer(feats, samples),
                model=lambda: model.predict(inputs, samples, rescale=False))


@dataclass
class DetrSpeed(Benchmark):
    """Time and count both detectors on each of ``devices`` (CUDA skipped where absent).
    ``layer_profile`` adds the time of each encoder layer's attention and FFN (best of ``reps``
    encoder runs; CPU time on the CPU, wall time on a GPU)."""
    multi_config: str = ''
    single_config: str = ''
    height: int = 800
    width: int = 1066
    batch_size: int = 1
    devices: Sequence[str] = ('cpu', )
    stages: Sequence[str] = STAGES
    cfg_options: Optional[dict] = None
    seed: int = 0
    layer_profile: bool = False

    def measure(self) -> Dict[str, Any]:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ValueError(f'unknown part {unknown[0]!r}; choose from {STAGES}')
        torch.manual_seed(self.seed)
        # Both configs are read before anything is built: a typo fails fast.
        cfgs = dict(multi=read_config(self.multi_config, self.cfg_options),
                    single=read_config(self.single_config, self.cfg_options))
        models = {k: build_model(cfg) for k, cfg in cfgs.items()}
        result = dict(not_shared=share_weights(models['multi'], models['single']),
                      params={k: count_parameters(m) for k, m in models.items()},
                      attention={k: attention_layout(m) for k, m in models.items()}, devices={})
        for device in self.devices:
            if device.startswith('cuda') and not torch.cuda.is_available():
                result['devices'][device] = dict(skipped='no CUDA device available')
                continue
            result['devices'][device] = self._measure_on(models, cfgs['multi'], device)
        return result

    def _measure_on(self, models: Dict[str, nn.Module], cfg: Any, device: str) -> Dict[str, Any]:
        for m in models.values():
            m.to(device)
        inputs, samples, _ = synthetic_batch(cfg, (self.height, self.width), self.batch_size,
                                             device, self.seed)
        with torch.no_grad():
            fns = {name: _stage_fns(m, inputs, samples) for name, m in models.items()}
            times = self.interleave({(n, s): fns[n][s] for s in self.stages for n in models},
                                    device=device, tag=f'{device} | ')
        cuda = device.startswith('cuda')
        clocks = ('wall', ) if cuda else ('wall', 'cpu')  # CPU time says nothing of GPU work
        entry = dict(device_name=torch.cuda.get_device_name(device) if cuda else cpu_model(),
                     times={c: {n: {s: times[n, s][c] for s in self.stages} for n in models}
                            for c in clocks})
        entry['parts'] = {c: {s: _summary(times['multi', s][c], times['single', s][c])
                              for s in self.stages} for c in clocks}
        if self.layer_profile:
            entry['encoder_layers'] = {n: self._profile(m, inputs, samples, device)
                                       for n, m in models.items()}
        for m in models.values():
            m.to('cpu')
        return entry

    def _profile(self, model: nn.Module, inputs: torch.Tensor, samples: list,
                 device: str) -> List[Dict[str, float]]:
        layers = model.encoder.layers
        timer = PartTimer({(i, k): [m] for i, layer in enumerate(layers)
                           for k, m in (('attn', layer.self_attn), ('ffn', layer.ffn),
                                        ('layer', layer))}, device, nested=True,
                          clock=time.process_time if device == 'cpu' else time.perf_counter)
        with torch.no_grad():
            enc_in, _ = model.pre_transformer(model.extract_feat(inputs), samples)
            runs = [timer(lambda: model.forward_encoder(**enc_in)) for _ in range(self.reps)]
        return [{k: 1e3 * min(r[i, k] for r in runs) for k in ('attn', 'ffn', 'layer')}
                for i in range(len(layers))]

    @staticmethod
    def markdown(result: Dict[str, Any], paper: Optional[dict] = None) -> str:
        """The timings and parameter counts; ``paper`` (default: ``result['paper']``) adds published
        figures, ``dict(multi=dict(params_m=..., fps=...), single=...)``, as
        ``tools/analysis_tools/benchmark_detr.py`` passes the SHViT paper's Table 9."""
        paper, cfg, att = paper or result.get('paper'), result['config'], result['attention']
        lines = [f"Input {cfg['batch_size']}x3x{cfg['height']}x{cfg['width']}, {cfg['reps']} "
                 f"timed repetitions after {cfg['warmup']} warm-up. Medians of the wall-clock time "
                 "('wall') and of the process's CPU time ('cpu'); speed-up = multi-head time / "
                 'single-head time.']
        for device, entry in result['devices'].items():
            if 'skipped' in entry:
                lines += ['', f'**{device}**: skipped ({entry["skipped"]})']
                continue
            parts, clocks = entry['parts'], list(entry['parts'])
            head = ['part'] + [x for c in clocks for x in (
                f'multi-head {c} ms', f'single-head {c} ms', f'{c} speed-up')]
            rows = [[s] + [x for c in clocks for p in [parts[c][s]] for x in (
                f"{p['multi_ms']:.1f}", f"{p['single_ms']:.1f}", f"{p['speedup']:.2f}x")]
                for s in parts[clocks[0]]]
            lines += ['', f"**{device}** ({entry['device_name']})", ''] + markdown_table(head, rows)
            if 'encoder_layers' in entry:
                lm, ls = entry['encoder_layers']['multi'], entry['encoder_layers']['single']
                sm, ss = sum(x['layer'] for x in lm), sum(x['layer'] for x in ls)
                kept = sum(b['layer'] for b, m, s in zip(ls, att['multi']['encoder'],
                                                         att['single']['encoder']) if m == s)
                rows = [[i + 1] + [f'{x[k]:.0f}' for x in (a, b) for k in ('attn', 'ffn', 'layer')]
                        + [f"{a['layer'] / b['layer']:.2f}x"]
                        for i, (a, b) in enumerate(zip(lm, ls))]
                head = ['layer'] + [f'{w} {k}' for w in ('multi', 'single')
                                    for k in ('attn', 'FFN', 'layer')] + ['layer speed-up']
                lines += ['', f"Encoder layers ({clocks[-1]} ms, best of {cfg['reps']}):", '']
                lines += markdown_table(head, rows) + [
                    '', f'Sum of layers: {sm:.0f} vs {ss:.0f} ms ({sm / ss:.2f}x); if the changed '
                    f"layers cost nothing: {sm / kept if kept else float('inf'):.2f}x."]
        pm, ps = result['params']['multi'], result['params']['single']
        rows = [[k, f'{pm[k] / 1e6:.3f}', f'{ps[k] / 1e6:.3f}', f'{(ps[k] - pm[k]) / 1e6:+.3f}']
                for k in _PARAM_KEYS]
        if paper:
            (mf, mp), (sf, sp) = ((paper[k]['fps'], paper[k]['params_m'])
                                  for k in ('multi', 'single'))
            lines += ['', 'Paper (Table 9, whole model on a GPU): '
                      f'{mf} -> {sf} FPS, {sf / mf:.2f}x.']
            rows.append(['paper (Table 9)', f'{mp:.1f}', f'{sp:.1f}', f'{sp - mp:+.1f}'])
        return '\n'.join(lines + [''] + markdown_table(
            ['parameters (M)', 'multi-head', 'single-head', 'difference'], rows) + [
            '', f"{len(result['not_shared'])} tensors of the single-head model have no same-shaped "
            'counterpart in the multi-head one (kept their initialisation); all others were '
            'copied from it.', '', 'Deformable attentions (heads x head dims), layers 1-6:',
            f"multi-head encoder {att['multi']['encoder']}, decoder {att['multi']['decoder']}; "
            f"single-head encoder {att['single']['encoder']}, decoder {att['single']['decoder']}."])


def _summary(multi: List[float], single: List[float]) -> dict:
    return dict(multi_ms=1e3 * statistics.median(multi), single_ms=1e3 * statistics.median(single),
                speedup=statistics.median(multi) / statistics.median(single),
                paired_speedup=statistics.median(a / b for a, b in zip(multi, single)),
                multi_min_ms=1e3 * min(multi), single_min_ms=1e3 * min(single))
