"""Backbone latency as the SHViT paper measures it (Sec. 4, Table 5): square crops (512x512 by
default), batch 16 on the CPU with one thread or 32 on a GPU; latency per image (batch time /
batch size) as the median over interleaved repetitions with its 25-75 % spread. Large matrix
multiplies timed in the same rotation give the machine's fp32/bf16 peak at that moment, against
which each backbone's achieved GFLOP/s (2 x multiply-adds / time) is reported."""
from __future__ import annotations

import functools
import gc
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from shvit_mm.inference import compare_outputs
from shvit_mm.utils.cpu import cpu_bf16_support

from .complexity import backbone_complexity
from .harness import Benchmark, markdown_table, summarize, sync
from .zoo import ARCHS, MODES, BenchEntry, build_candidate, skip_reason


def _gemms(device: str) -> Dict[str, Tuple[float, Callable[[], torch.Tensor]]]:
    """Large matrix multiplies timed in the models' rotation, name -> (FLOPs, call): the machine's
    peak at that moment. oneDNN's fp32 one is a 1x1 channels-last convolution, as pointwise
    convolutions run."""
    if device.startswith('cuda'):
        torch.backends.cuda.matmul.allow_tf32 = False
        size, rows, specs = 4096, 8192, [('gemm fp32', torch.float32, False, True),
                                         ('gemm bf16', torch.bfloat16, False, True)]
    else:
        size, rows, specs = 1024, 4096, [
            ('gemm fp32 (MKL/BLAS)', torch.float32, False, True),
            ('gemm fp32 (oneDNN)', torch.float32, True, torch.backends.mkldnn.is_available()),
            ('gemm bf16 (oneDNN)', torch.bfloat16, False, cpu_bf16_support()['fast'])]
    out, side = {}, math.isqrt(rows)
    for name, dtype, onednn, _ in (s for s in specs if s[3]):
        gen = torch.Generator().manual_seed(0)
        shapes = ([(1, size, side, side), (size, size, 1, 1)] if onednn
                  else [(rows, size), (size, size)])
        a, b = (torch.randn(*s, generator=gen).to(device, dtype) for s in shapes)
        if onednn:
            a, b = (t.contiguous(memory_format=torch.channels_last) for t in (a, b))
        fn = (functools.partial(torch.ops.aten.mkldnn_convolution, a, b, None, [0, 0], [1, 1],
                                [1, 1], 1) if onednn else functools.partial(torch.mm, a, b))
        out[name] = (2.0 * rows * size * size, torch.inference_mode()(fn))
    return out


@functools.lru_cache(maxsize=None)
def _macs(arch: str, size: int) -> Optional[int]:
    try:
        return backbone_complexity(arch, size, deploy=True)['flops']
    except Exception as e:  # noqa: BLE001  (a counter failure must not end the benchmark)
        print(f'warning: could not count FLOPs of {arch} at {size}: {e}', file=sys.stderr)
        return None


@dataclass
class LatencyBenchmark(Benchmark):
    """The table sizes, then the sweep of the latency-vs-size plot (``plot_*``; None: as the
    table), each size built and timed interleaved with the GEMMs. ``batch`` None: 16 on the CPU,
    32 on CUDA (the paper's); ``reference``: the entry the speed-up column divides by."""
    entries: List[BenchEntry] = field(default_factory=list)
    sizes: List[int] = field(default_factory=lambda: [512])
    batch: Optional[int] = None
    warmup: int = 3
    reps: int = 10
    plot_entries: List[BenchEntry] = field(default_factory=list)
    plot_sizes: List[int] = field(default_factory=list)
    plot_batch: Optional[int] = None
    plot_reps: Optional[int] = None
    plot_warmup: Optional[int] = None
    reference: Optional[str] = 'resnet50:eager'
    check_accuracy: bool = True
    peak: bool = True
    flops: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.batch = self.batch or (32 if self.device.startswith('cuda') else 16)
        self.plot_batch, self.plot_reps = self.plot_batch or self.batch, self.plot_reps or self.reps
        self.plot_warmup = self.warmup if self.plot_warmup is None else self.plot_warmup

    def measure(self) -> Dict[str, Any]:
        out = dict(table=[], peaks={}, peaks_cpu_time={}, sweep=[], sweep_peaks={})
        for size in self.sizes:
            rows, out['peaks'][str(size)], out['peaks_cpu_time'][str(size)] = self.measure_size(
                self.entries, size, self.batch, self.reps, self.warmup, self.check_accuracy)
            out['table'] += rows
        for size in self.plot_sizes if self.plot_entries else ():
            rows, out['sweep_peaks'][str(size)], _ = self.measure_size(
                self.plot_entries, size, self.plot_batch, self.plot_reps, self.plot_warmup, False,
                'sweep ')
            out['sweep'] += rows
        base = {r['size']: r for r in out['table'] if r['key'] == self.reference}
        for r, clock in ((r, c) for r in out['table'] for c in ('', 'cpu_')):
            ref = base.get(r['size'], {}).get(f'{clock}ms_per_img')
            if ref and f'{clock}ms_per_img' in r:
                r[f'{clock}speedup_vs_reference'] = (ref['median']
                                                     / r[f'{clock}ms_per_img']['median'])
        return out

    def measure_size(self, entries: Sequence[BenchEntry], size: int, batch: int, reps: int,
                     warmup: int, accuracy: bool, tag: str = '') -> Tuple[list, dict, dict]:
        """Build every entry for ``size``, then time them and the GEMMs interleaved. Returns one
        row per entry (a skipped one says why) and the GEMM peaks (GFLOP/s, wall and CPU time)."""
        x = torch.randn(batch, 3, size, size,
                        generator=torch.Generator().manual_seed(self.seed)).to(self.device)
        rows, fns, prefix = {}, {}, f'{tag}{size}px b{batch}'
        for i, e in enumerate(entries):
            row = rows[e.key] = dict(key=e.key, arch=e.arch, mode=e.mode, label=e.label, size=size,
                                     batch=batch, dtype=e.compute_dtype,
                                     skipped=skip_reason(e, self.device))
            if not row['skipped']:
                self.say(f'{prefix} | build {i + 1}/{len(entries)} {e.key}'
                         + (' (compiling)' if e.mode_info.backend != 'eager' else ''))
                t0 = time.perf_counter()
                try:
                    fn, params, reference = build_candidate(e, x, self.device, self.threads,
                                                            accuracy)
                    out = fn(x)  # the first call (some backends compile here)
                    sync(self.device)
                except Exception as err:  # noqa: BLE001  (the table shows the error)
                    row['skipped'] = (f'failed to build/run: {type(err).__name__}: '
                                      f'{str(err).partition(chr(10))[0][:200]}')
            if row['skipped']:
                self.say(f'{prefix} | skip {e.key}: {row["skipped"]}')
                continue
            del row['skipped']
            row.update(build_s=time.perf_counter() - t0, params=params)
            if reference is not None and e.mode != 'eager':
                with torch.inference_mode():
                    row['accuracy'] = compare_outputs(reference(x), out)
            reference = out = None
            if self.flops:
                row['macs'] = _macs(e.arch, size)
            fns[e.key] = functools.partial(fn, x)
        gemms = _gemms(self.device) if self.peak else {}
        fns.update((k, fn) for k, (_, fn) in gemms.items())
        times = self.interleave(fns, reps, warmup, tag=f'{prefix} | ') if fns else {}
        peaks = {c: {k: n / statistics.median(times[k][c]) / 1e9 for k, (n, _) in gemms.items()}
                 for c in ('wall', 'cpu')}
        clocks = (('wall', ''), ('cpu', 'cpu_')) if self.device == 'cpu' else (('wall', ''), )
        for row in (rows[k] for k in times if k in rows):
            # The process's CPU time leaves out time spent waiting for a core: with one thread the
            # steadier figure on a shared machine (the wall clock is the paper's).
            for clock, pre in clocks:
                st = summarize(times[row['key']][clock], 1e3 / batch)
                row.update({f'{pre}ms_per_img': st, f'{pre}times_s': times[row['key']][clock]})
                if not row.get('macs'):
                    continue
                peak = max((v for k, v in peaks[clock].items()
                            if ('bf16' in k) == (row['dtype'] == 'bf16')), default=None)
                row[f'{pre}gflop_s'] = 2.0 * row['macs'] / st['median'] / 1e6
                if peak:
                    row.update({f'{pre}pct_peak': 100.0 * row[f'{pre}gflop_s'] / peak,
                                f'{pre}roofline_ms_per_img': 2.0 * row['macs'] / peak / 1e6,
                                f'{pre}peak_gflop_s': peak})
            row['img_per_s'] = 1e3 / row['ms_per_img']['median']
        fns.clear()
        fn = reference = None
        gc.collect()  # frees the models, and an ONNX model's temporary folder
        return list(rows.values()), peaks['wall'], peaks['cpu']

    @staticmethod
    def markdown(result: Dict[str, Any], paper_cpu_ms: Optional[Dict[str, float]] = None,
                 comparisons: Sequence[Tuple[str, ...]] = ()) -> str:
        """The latency table (one block per input size), then the :func:`compare_entries` lines.
        ``paper_cpu_ms`` (backbone -> published CPU ms per image, as
        ``tools/analysis_tools/benchmark_backbone.py`` passes the SHViT paper's Table 5) adds the
        published speed-up over the reference for the eager and deploy rows of the backbones it
        names."""
        cfg, paper, lines = result['config'], paper_cpu_ms or {}, []
        ref, cpu, has_paper = cfg.get('reference'), cfg['device'] == 'cpu', paper_cpu_ms is not None
        paper_ref = paper.get(ref.split(':')[0]) if ref else None

        def f(v: Optional[float], fmt: str, unit: float = 1.0) -> str:
            return '–' if v is None else format(v / unit, fmt)

        head = (['backbone', 'mode', 'params (M)', 'GMACs', 'ms/img (median)', 'p25–p75', 'img/s']
                + ['CPU-time ms/img'] * cpu
                + ['GFLOP/s', '% of peak', f'speed-up vs {ref or "reference"}']
                + ['paper CPU speed-up'] * has_paper + ['min cos vs fp32'])
        for size in cfg['sizes']:
            peaks, rows = result['peaks'].get(str(size), {}), []
            for r in (r for r in result['table'] if r['size'] == size):
                row = [ARCHS[r['arch']].label, MODES[r['mode']].label]
                if 'skipped' in r:
                    rows.append(row + ['', '', f'skipped: {r["skipped"]}'] + [''] * (len(head) - 5))
                    continue
                st, own = r['ms_per_img'], paper.get(r['arch'])
                published = own and paper_ref and r['mode'] in ('eager', 'deploy')
                rows.append(row + [f'{r["params"] / 1e6:.2f}', f(r.get('macs') or None, '.2f', 1e9),
                                   f'{st["median"]:.1f}', f'{st["p25"]:.1f}–{st["p75"]:.1f}',
                                   f'{r["img_per_s"]:.1f}']
                    + [f(r.get('cpu_ms_per_img', {}).get('median'), '.1f')] * cpu
                    + [f(r.get('gflop_s'), '.0f'), f(r.get('pct_peak'), '.0f'),
                       f(r.get('speedup_vs_reference'), '.2f')]
                    + [f(paper_ref / own if published else None, '.2f')] * has_paper
                    + [f(r.get('accuracy', {}).get('cosine'), '.6f')])
            peak = ', '.join(f'{k} {v:.0f} GFLOP/s' for k, v in peaks.items())
            lines += [f'**{size}x{size}, batch {cfg["batch"]}, {cfg["device"]}'
                      + f', {cfg["threads"]} thread(s)' * cpu
                      + f', median of {cfg["reps"]} interleaved repetitions**'
                      + f'  \nmeasured GEMM peak: {peak}' * bool(peaks), '']
            lines += markdown_table(head, rows, left=2) + ['']
        targets = compare_entries(result, comparisons)
        return '\n'.join(lines[:-1] + [''] * bool(targets) + [f'- {t}' for t in targets])


def compare_entries(result: Dict[str, Any], comparisons: Sequence[Tuple[str, ...]]) -> List[str]:
    """One line per comparison whose entries were measured at 512 px (else the first table size):
    ``(label, slower_key, faster_key)`` gives the ratio of their median latencies (CPU time in
    brackets when measured), ``(label, key)`` the entry's latency against its fp32 roofline (its
    multiply-adds at the measured GEMM peak)."""
    sizes, out = result['config']['sizes'], []
    size = 512 if 512 in sizes else sizes[0]
    rows = {r['key']: r for r in result['table'] if r['size'] == size and 'ms_per_img' in r}
    for label, *keys in comparisons:
        r = [rows.get(k, {}) for k in keys]
        ms = [[x.get(c, {}).get('median') for x in r] for c in ('ms_per_img', 'cpu_ms_per_img')]
        if len(r) == 2 and all(ms[0]):
            out.append(f'{label}: {ms[0][0] / ms[0][1]:.2f}x'
                       + (f' (CPU time: {ms[1][0] / ms[1][1]:.2f}x)' if all(ms[1]) else ''))
        elif len(r) == 1 and r[0].get('roofline_ms_per_img'):
            roof, croof = r[0]['roofline_ms_per_img'], r[0].get('cpu_roofline_ms_per_img')
            out.append(f'{label}: {ms[0][0]:.1f} ms/img = {ms[0][0] / roof:.2f}x the fp32 roofline '
                       f'({roof:.1f} ms/img at {r[0]["peak_gflop_s"]:.0f} GFLOP/s)'
                       + (f'; CPU time {ms[1][0]:.1f} ms/img = {ms[1][0] / croof:.2f}x '
                          f'({croof:.1f} ms/img)' if croof else ''))
    return out


def plot_latency_vs_size(result: Dict[str, Any], path: str) -> Optional[str]:
    """Plot latency (ms/img, log scale) against input size for every entry measured at two or more
    sizes (the sweep if there is one, else the table) to the PNG ``path``; None if there is none."""
    series: Dict[str, list] = {}
    for r in (r for r in result.get('sweep') or result.get('table') or [] if 'ms_per_img' in r):
        series.setdefault(r['label'], []).append((r['size'], r['ms_per_img']['median'], r['key']))
    series = {k: sorted(v) for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator
    cfg, fmt = result['config'], FuncFormatter(lambda v, _: f'{v:g}')
    batch = cfg['plot_batch'] if result.get('sweep') else cfg['batch']
    where = cfg['device'] + f', {cfg["threads"]} thread(s)' * (cfg['device'] == 'cpu')
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=80)
    for label, pts in series.items():
        ax.plot(*list(zip(*pts))[:2], '-o' if pts[0][2].startswith('shvit') else '--s', ms=3.5,
                lw=1.4, label=label)
    ax.set(xlabel='input size (px, square)', ylabel='latency (ms / image)', yscale='log',
           xticks=sorted({p[0] for pts in series.values() for p in pts}))
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.tick_params(axis='y', which='minor', labelsize=7)
    ax.set_title(f'Backbone latency vs input size ({where}, batch {batch})', fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, loc='upper left')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
