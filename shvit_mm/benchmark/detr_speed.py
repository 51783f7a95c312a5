"""Speed and size of single-head against multi-head Deformable DETR, measured side by side.

Both detectors are built from their configs, get the same weights wherever shapes agree (the
single-head model loads the multi-head one's state dict with ``strict=False``), and run on the same
input tensor. Every repetition times, for each model in turn (the order alternates between
repetitions so drifts in machine load hit both alike):

* ``encoder``: the 6 encoder layers (``forward_encoder``),
* ``decoder``: the 6 decoder layers (``forward_decoder``),
* ``transformer``: ``forward_transformer`` (pre-transformer, encoder, pre-decoder, decoder),
* ``model``: ``predict`` (backbone, neck, transformer, head and box decoding; no data loading).

Two clocks are read around every call: wall-clock time and, on the CPU, the process's CPU time
(``time.process_time``). On a machine shared with other jobs the wall clock also counts the time the
process waited for a core; with one thread, CPU time counts only its own work and is the steadier
figure (both are reported). Figures are medians over repetitions; the speed-up is
``median(multi) / median(single)``; the JSON also keeps the median of the per-repetition ratios and
every raw time.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from shvit_mm.apis.config import build_model, read_config

PARTS = ('encoder', 'decoder', 'transformer', 'model')


# ------------------------------------------------------------------------------------------------
# models and inputs (built by shvit_mm.apis.config.build_model: no pretrained download, since
# speed does not depend on the weights' values)
# ------------------------------------------------------------------------------------------------
def count_parameters(model: nn.Module) -> Dict[str, int]:
    """Parameter counts of the whole detector and of its parts."""
    def n(module: Optional[nn.Module]) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    counts = dict(total=n(model), backbone=n(getattr(model, 'backbone', None)),
                  neck=n(getattr(model, 'neck', None)), encoder=n(model.encoder),
                  decoder=n(model.decoder), bbox_head=n(getattr(model, 'bbox_head', None)))
    counts['trainable'] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts['transformer'] = counts['encoder'] + counts['decoder']
    counts['other'] = counts['total'] - sum(
        counts[k] for k in ('backbone', 'neck', 'encoder', 'decoder', 'bbox_head'))
    return counts


def attention_layout(model: nn.Module) -> Dict[str, List[str]]:
    """``heads x head-dims`` of every multi-scale deformable attention, per encoder/decoder layer."""
    def describe(attn: nn.Module) -> str:
        value_dims = attn.value_proj.out_features
        return f'{attn.num_heads}x{value_dims // attn.num_heads}'

    layout = dict(encoder=[], decoder=[])
    for layer in model.encoder.layers:
        layout['encoder'].append(describe(layer.self_attn))
    for layer in model.decoder.layers:
        layout['decoder'].append(describe(layer.cross_attn))
    return layout


def make_inputs(batch_size: int, height: int, width: int, device: str = 'cpu',
                seed: int = 0) -> Tuple[torch.Tensor, list]:
    """A normalised random image batch and the data samples a detector needs to predict."""
    from mmdet.structures import DetDataSample

    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch_size, 3, height, width, generator=gen).to(device)
    meta = dict(img_shape=(height, width), ori_shape=(height, width),
                batch_input_shape=(height, width), pad_shape=(height, width),
                scale_factor=(1.0, 1.0))
    samples = [DetDataSample(metainfo=dict(meta)) for _ in range(batch_size)]
    return inputs, samples


def share_weights(src: nn.Module, dst: nn.Module) -> List[str]:
    """Copy every tensor of ``src`` into ``dst`` where names and shapes agree (MMEngine's
    ``load_state_dict`` with ``strict=False``); returns the names of ``dst`` tensors left as they
    were."""
    from mmengine.runner.checkpoint import load_state_dict

    src_sd = src.state_dict()
    dst_sd = dst.state_dict()
    load_state_dict(dst, src_sd, strict=False, logger='silent')  # the skipped keys are returned
    return sorted(k for k, v in dst_sd.items()
                  if k not in src_sd or src_sd[k].shape != v.shape)


# ------------------------------------------------------------------------------------------------
# timing
# ------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object], device: str) -> Tuple[float, float]:
    """(wall-clock seconds, process CPU seconds) of one call."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _part_fns(model: nn.Module, inputs: torch.Tensor,
              samples: list) -> Dict[str, Callable[[], object]]:
    """Closures running each timed part on precomputed inputs."""
    with torch.no_grad():
        feats = model.extract_feat(inputs)
        enc_in, dec_in = model.pre_transformer(feats, samples)
        enc_out = model.forward_encoder(**enc_in)
        tmp, _ = model.pre_decoder(**enc_out)
        dec_in = dict(dec_in, **tmp)
    return dict(
        encoder=lambda: model.forward_encoder(**enc_in),
        decoder=lambda: model.forward_decoder(**dec_in),
        transformer=lambda: model.forward_transformer(feats, samples),
        model=lambda: model.predict(inputs, samples, rescale=False))


def time_models(models: Dict[str, nn.Module], inputs: torch.Tensor, samples: list, device: str,
                reps: int, warmup: int, parts: Sequence[str] = PARTS) -> Dict[str, dict]:
    """Interleaved timings: ``{clock: {model_name: {part: [seconds per repetition]}}}`` with
    clocks ``wall`` and ``cpu``."""
    fns = {name: _part_fns(m, inputs, samples) for name, m in models.items()}
    names = list(models)
    times = {clock: {name: {part: [] for part in parts} for name in names}
             for clock in ('wall', 'cpu')}
    with torch.no_grad():
        for rep in range(warmup + reps):
            order = names if rep % 2 == 0 else names[::-1]
            for part in parts:
                for name in order:
                    wall, cpu = _timed(fns[name][part], device)
                    if rep >= warmup:
                        times['wall'][name][part].append(wall)
                        times['cpu'][name][part].append(cpu)
    return times


def _summary(multi: List[float], single: List[float]) -> dict:
    return dict(multi_ms=1e3 * statistics.median(multi), single_ms=1e3 * statistics.median(single),
                speedup=statistics.median(multi) / statistics.median(single),
                paired_speedup=statistics.median(a / b for a, b in zip(multi, single)),
                multi_min_ms=1e3 * min(multi), single_min_ms=1e3 * min(single))


def profile_encoder_layers(model: nn.Module, inputs: torch.Tensor, samples: list, device: str,
                           reps: int) -> List[Dict[str, float]]:
    """Per encoder layer: milliseconds in its self-attention, its FFN and the whole layer (best of
    ``reps`` runs of the encoder; process CPU time on the CPU, wall-clock time on a GPU)."""
    clock = time.perf_counter if device.startswith('cuda') else time.process_time
    spans: Dict[Tuple[int, str], List[float]] = {}
    handles = []

    def hooks(key):
        def before(module, args):
            _sync(device)
            spans.setdefault(key, []).append(-clock())

        def after(module, args, output):
            _sync(device)
            spans[key][-1] += clock()
        return before, after

    for i, layer in enumerate(model.encoder.layers):
        for name, module in (('attn', layer.self_attn), ('ffn', layer.ffn), ('layer', layer)):
            before, after = hooks((i, name))
            handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        with torch.no_grad():
            enc_in, _ = model.pre_transformer(model.extract_feat(inputs), samples)
            for _ in range(reps):
                model.forward_encoder(**enc_in)
    finally:
        for h in handles:
            h.remove()
    return [{name: 1e3 * min(spans[(i, name)]) for name in ('attn', 'ffn', 'layer')}
            for i in range(len(model.encoder.layers))]


def _load() -> Optional[List[float]]:
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover - not on every OS
        return None


def run_benchmark(multi_config: str, single_config: str, height: int = 800, width: int = 1066,
                  batch_size: int = 1, reps: int = 5, warmup: int = 1, threads: Optional[int] = 1,
                  devices: Sequence[str] = ('cpu', ), parts: Sequence[str] = PARTS,
                  cfg_options: Optional[dict] = None, seed: int = 0,
                  layer_profile: bool = False) -> dict:
    """Time and count both detectors; returns a JSON-able dict (see :func:`format_markdown`).

    ``layer_profile`` adds, after the interleaved timings, the time of each encoder layer's
    attention and FFN (:func:`profile_encoder_layers`, ``reps`` runs per model)."""
    for part in parts:
        if part not in PARTS:
            raise ValueError(f'unknown part {part!r}; choose from {PARTS}')
    if reps < 1 or warmup < 0:
        raise ValueError(f'reps must be >= 1 and warmup >= 0, got reps={reps}, warmup={warmup}')
    saved_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(multi_config, single_config, height, width, batch_size, reps, warmup, devices,
                    parts, cfg_options, seed, layer_profile)
    finally:
        torch.set_num_threads(saved_threads)


def _run(multi_config, single_config, height, width, batch_size, reps, warmup, devices, parts,
         cfg_options, seed, layer_profile) -> dict:
    torch.manual_seed(seed)
    # Both configs are read before anything is built: a typo fails fast.
    cfgs = dict(multi=read_config(multi_config, cfg_options),
                single=read_config(single_config, cfg_options))
    result = dict(
        configs=dict(multi=multi_config, single=single_config), cfg_options=cfg_options or {},
        input=dict(batch_size=batch_size, height=height, width=width), reps=reps, warmup=warmup,
        threads=torch.get_num_threads(), torch=torch.__version__, platform=platform.platform(),
        cpu=platform.processor() or platform.machine(), devices={})

    models = dict(multi=build_model(cfgs['multi']), single=build_model(cfgs['single']))
    result['not_shared'] = share_weights(models['multi'], models['single'])
    result['params'] = {k: count_parameters(m) for k, m in models.items()}
    result['attention'] = {k: attention_layout(m) for k, m in models.items()}

    for device in devices:
        if device.startswith('cuda') and not torch.cuda.is_available():
            result['devices'][device] = dict(skipped='no CUDA device available')
            continue
        for m in models.values():
            m.to(device)
        inputs, samples = make_inputs(batch_size, height, width, device, seed)
        load_before = _load()
        times = time_models(models, inputs, samples, device, reps, warmup, parts)
        # process CPU time says nothing about GPU work
        clocks = ('wall', ) if device.startswith('cuda') else ('wall', 'cpu')
        entry = dict(load_before=load_before, load_after=_load(),
                     device_name=(torch.cuda.get_device_name(device)
                                  if device.startswith('cuda') else result['cpu']),
                     times={c: times[c] for c in clocks}, parts={})
        for clock in clocks:
            entry['parts'][clock] = {
                part: _summary(times[clock]['multi'][part], times[clock]['single'][part])
                for part in parts}
        if layer_profile:
            entry['encoder_layers'] = {
                name: profile_encoder_layers(m, inputs, samples, device, reps)
                for name, m in models.items()}
        result['devices'][device] = entry
        for m in models.values():
            m.to('cpu')
    return result


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def format_markdown(result: dict, command: Optional[str] = None,
                    paper: Optional[dict] = None) -> str:
    """Markdown tables of the timings and parameter counts in ``result``.

    ``paper`` (default: ``result['paper']`` if there is one) adds published figures to compare
    with: ``dict(multi=dict(params_m=..., fps=...), single=dict(params_m=..., fps=...))``, as
    ``tools/analysis_tools/benchmark_detr.py`` passes the SHViT paper's Table 9.
    """
    paper = paper or result.get('paper')
    lines = []
    if command:
        lines += [f'Command: `{command}`', '']
    inp = result['input']
    lines.append(f"Input {inp['batch_size']}x3x{inp['height']}x{inp['width']}, "
                 f"{result['reps']} timed repetitions after {result['warmup']} warm-up, "
                 f"{result['threads']} thread(s), torch {result['torch']}. Medians of the wall-clock "
                 "time ('wall') and of the process's CPU time ('cpu'); speed-up = multi-head time "
                 '/ single-head time.')
    for device, entry in result['devices'].items():
        lines.append('')
        if 'skipped' in entry:
            lines.append(f'**{device}**: skipped ({entry["skipped"]})')
            continue
        lines.append(f"**{device}** ({entry['device_name']}); load average before "
                     f"{_fmt_load(entry['load_before'])}, after {_fmt_load(entry['load_after'])}")
        parts = entry['parts']
        clocks = list(parts)
        head = '| part |' + ''.join(f' multi-head {c} ms | single-head {c} ms | {c} speed-up |'
                                    for c in clocks)
        lines += ['', head, '|---|' + '---|---|---|' * len(clocks)]
        for part in parts[clocks[0]]:
            row = f'| {part} |'
            for c in clocks:
                p = parts[c][part]
                row += f" {p['multi_ms']:.1f} | {p['single_ms']:.1f} | {p['speedup']:.2f}x |"
            lines.append(row)
        if 'encoder_layers' in entry:
            lm, ls = entry['encoder_layers']['multi'], entry['encoder_layers']['single']
            clock = 'wall' if device.startswith('cuda') else 'cpu'
            lines += ['', f'Encoder layers ({clock} ms, best of {result["reps"]}):', '',
                      '| layer | multi attn | multi FFN | multi layer | single attn | single FFN | '
                      'single layer | layer speed-up |', '|---|---|---|---|---|---|---|---|']
            for i, (a, b) in enumerate(zip(lm, ls)):
                lines.append(f"| {i + 1} | {a['attn']:.0f} | {a['ffn']:.0f} | {a['layer']:.0f} | "
                             f"{b['attn']:.0f} | {b['ffn']:.0f} | {b['layer']:.0f} | "
                             f"{a['layer'] / b['layer']:.2f}x |")
            sum_m, sum_s = sum(x['layer'] for x in lm), sum(x['layer'] for x in ls)
            att = result['attention']
            kept = sum(b['layer'] for b, am, as_ in zip(ls, att['multi']['encoder'],
                                                         att['single']['encoder']) if am == as_)
            bound = sum_m / kept if kept else float('inf')
            lines += ['', f'Sum of layers: {sum_m:.0f} vs {sum_s:.0f} ms ({sum_m / sum_s:.2f}x); '
                      f'if the changed layers cost nothing: {bound:.2f}x.']
    if paper:
        lines += ['', f"Paper (Table 9, whole model on a GPU): {paper['multi']['fps']} -> "
                  f"{paper['single']['fps']} FPS, "
                  f"{paper['single']['fps'] / paper['multi']['fps']:.2f}x."]
    pm, ps = result['params']['multi'], result['params']['single']
    lines += ['', '| parameters (M) | multi-head | single-head | difference |', '|---|---|---|---|']
    for key in ('total', 'trainable', 'transformer', 'encoder', 'decoder', 'backbone', 'neck',
                'bbox_head'):
        lines.append(f'| {key} | {pm[key] / 1e6:.3f} | {ps[key] / 1e6:.3f} | '
                     f'{(ps[key] - pm[key]) / 1e6:+.3f} |')
    if paper:
        lines.append(f"| paper (Table 9) | {paper['multi']['params_m']:.1f} | "
                     f"{paper['single']['params_m']:.1f} | "
                     f"{paper['single']['params_m'] - paper['multi']['params_m']:+.1f} |")
    lines += ['', f"{len(result['not_shared'])} tensors of the single-head model have no same-shaped "
                 'counterpart in the multi-head one (kept their initialisation); all others were '
                 'copied from it.']
    att = result['attention']
    lines += ['', 'Deformable attentions (heads x head dims), layers 1-6:',
              f"multi-head encoder {att['multi']['encoder']}, decoder {att['multi']['decoder']}; "
              f"single-head encoder {att['single']['encoder']}, decoder {att['single']['decoder']}."]
    return '\n'.join(lines)


def _fmt_load(load: Optional[List[float]]) -> str:
    return 'n/a' if load is None else ' '.join(f'{x:.2f}' for x in load)


def save_json(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(result, f, indent=2)


def run_and_report(out: str, command: Optional[str] = None, paper: Optional[dict] = None,
                   **kwargs) -> dict:
    """:func:`run_benchmark` (``kwargs``), then write every figure (with ``command`` and the
    ``paper`` figures compared against) to the JSON file ``out`` and print the markdown report."""
    result = run_benchmark(**kwargs)
    result['command'] = command
    if paper:
        result['paper'] = paper
    save_json(result, out)
    print(format_markdown(result, command))
    print(f'\nJSON: {out}')
    return result
