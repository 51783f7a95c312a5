"""Backbone latency, measured the way the SHViT paper does, with every model interleaved.

Protocol (paper Sec. 4 / Table 5): square crops (512x512 by default), batch 16 on the CPU with one
thread, batch 32 on a GPU with synchronisation; warm-up, then many timed repetitions. Latency is
reported per image (batch time / batch size), as the median over repetitions with the 25-75 %
spread.

To keep ratios honest on a busy machine, models are **interleaved**: each repetition times one
batch of every model in turn (the starting model rotates every repetition), so a burst of load
hits all of them alike. Two matrix-multiply "models" run in the same rotation and give the
machine's measured fp32/bf16 peak at that moment; each model's achieved GFLOP/s (2 x
multiply-adds / time) is reported against it.
"""
from __future__ import annotations

import gc
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from shvit_mm.deploy import compare_outputs, cpu_bf16_support, cpu_flags

from .zoo import ARCHS, MODES, BenchEntry, Runner, build_runner, skip_reason

__all__ = ['BenchmarkConfig', 'Progress', 'measure_size', 'run_benchmark', 'markdown_table',
           'plot_latency_vs_size', 'environment_info', 'compare_entries', 'time_stats',
           'write_json', 'run_and_report']


# ---------------------------------------------------------------------------------------------
# Configuration and progress
# ---------------------------------------------------------------------------------------------


@dataclass
class BenchmarkConfig:
    entries: List[BenchEntry]
    sizes: List[int] = field(default_factory=lambda: [512])
    batch: Optional[int] = None           # None: 16 on CPU, 32 on CUDA (the paper's)
    device: str = 'cpu'
    threads: Optional[int] = 1            # CPU threads (None: leave PyTorch's default)
    warmup: int = 3                       # untimed batches per model (interleaved)
    reps: int = 10                        # timed batches per model (interleaved)
    plot_entries: List[BenchEntry] = field(default_factory=list)
    plot_sizes: List[int] = field(default_factory=list)
    plot_batch: Optional[int] = None      # None: same as batch
    plot_reps: Optional[int] = None       # None: same as reps
    plot_warmup: Optional[int] = None     # None: same as warmup
    reference: Optional[str] = 'resnet50:eager'
    check_accuracy: bool = True
    peak: bool = True
    flops: bool = True
    seed: int = 0

    def resolved_batch(self) -> int:
        if self.batch:
            return self.batch
        return 32 if self.device.startswith('cuda') else 16


class Progress:
    """Progress lines on stderr (carriage-return updates on a terminal)."""

    def __init__(self, enabled: bool = True, stream=None) -> None:
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
        self.t0 = time.perf_counter()
        self._open = False

    def _elapsed(self) -> str:
        s = int(time.perf_counter() - self.t0)
        return f'{s // 60:d}m{s % 60:02d}s'

    def update(self, msg: str) -> None:
        if not self.enabled:
            return
        line = f'[{self._elapsed()}] {msg}'
        if self.tty:
            self.stream.write('\r\033[K' + line)
            self._open = True
        else:
            self.stream.write(line + '\n')
        self.stream.flush()

    def done(self, msg: str = '') -> None:
        if not self.enabled:
            return
        if self._open:
            self.stream.write('\n')
            self._open = False
        if msg:
            self.stream.write(f'[{self._elapsed()}] {msg}\n')
        self.stream.flush()


# ---------------------------------------------------------------------------------------------
# Timing helpers
# ---------------------------------------------------------------------------------------------


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def time_stats(times_s: Sequence[float], batch: int) -> Dict[str, float]:
    """Per-image milliseconds: median, 25/75 % quantiles, min, mean over repetitions."""
    ms = sorted(t * 1e3 / batch for t in times_s)
    n = len(ms)

    def q(p: float) -> float:
        if n == 1:
            return ms[0]
        pos = p * (n - 1)
        lo, hi = int(math.floor(pos)), int(math.ceil(pos))
        return ms[lo] + (ms[hi] - ms[lo]) * (pos - lo)

    return dict(median=q(0.5), p25=q(0.25), p75=q(0.75), min=ms[0], max=ms[-1],
                mean=sum(ms) / n, n=n)


class _Gemm:
    """A large matrix multiply timed in the same rotation as the models (machine peak)."""

    def __init__(self, name: str, dtype: torch.dtype, device: str, size: int = 1024,
                 rows: int = 4096, onednn: bool = False) -> None:
        self.name, self.dtype, self.device = name, dtype, device
        self.flops = 2.0 * rows * size * size
        gen = torch.Generator().manual_seed(0)
        if onednn:
            # A 1x1 convolution in channels-last is one (rows x size) @ (size x size) GEMM in
            # oneDNN: the kernel the models' pointwise convolutions use.
            side = int(math.isqrt(rows))
            self.a = torch.randn(1, size, side, side, generator=gen).to(device, dtype).contiguous(
                memory_format=torch.channels_last)
            self.w = torch.randn(size, size, 1, 1, generator=gen).to(device, dtype).contiguous(
                memory_format=torch.channels_last)
            self.fn = lambda: torch.ops.aten.mkldnn_convolution(self.a, self.w, None, [0, 0], [1, 1],
                                                                [1, 1], 1)
        else:
            self.a = torch.randn(rows, size, generator=gen).to(device, dtype)
            self.b = torch.randn(size, size, generator=gen).to(device, dtype)
            self.fn = lambda: torch.mm(self.a, self.b)

    def __call__(self, _x: Any = None) -> Any:
        with torch.inference_mode():
            return self.fn()


def _gemms(device: str) -> List[_Gemm]:
    if device.startswith('cuda'):
        torch.backends.cuda.matmul.allow_tf32 = False
        return [_Gemm('gemm fp32', torch.float32, device, 4096, 8192),
                _Gemm('gemm bf16', torch.bfloat16, device, 4096, 8192)]
    gemms = [_Gemm('gemm fp32 (MKL/BLAS)', torch.float32, device)]
    if torch.backends.mkldnn.is_available():
        gemms.append(_Gemm('gemm fp32 (oneDNN)', torch.float32, device, onednn=True))
    if cpu_bf16_support()['fast']:
        gemms.append(_Gemm('gemm bf16 (oneDNN)', torch.bfloat16, device))
    return gemms


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def _arch_macs(arch: str, size: int, cache: Dict[Tuple[str, int], Optional[int]]) -> Optional[int]:
    key = (arch, size)
    if key not in cache:
        from .complexity import backbone_complexity
        try:
            cache[key] = backbone_complexity(arch, size, deploy=True)['flops']
        except Exception as e:  # noqa: BLE001  (a counter failure must not end the benchmark)
            print(f'warning: could not count FLOPs of {arch} at {size}: {e}', file=sys.stderr)
            cache[key] = None
    return cache[key]


def measure_size(entries: Sequence[BenchEntry], size: int, batch: int, cfg: BenchmarkConfig,
                 progress: Progress, reps: int, with_accuracy: bool, with_peak: bool,
                 macs_cache: Optional[Dict] = None, tag: str = '',
                 warmup: Optional[int] = None) -> Dict[str, Any]:
    """Build every entry for ``size``, warm all up, then time them interleaved.

    Returns ``dict(results=[...], peaks={...})`` with one result per entry (skipped ones carry
    ``skipped``: the reason).
    """
    device = cfg.device
    gen = torch.Generator().manual_seed(cfg.seed)
    x = torch.randn(batch, 3, size, size, generator=gen).to(device)
    results: Dict[str, Dict[str, Any]] = {}
    runners: List[Tuple[str, Callable, Any]] = []  # (key, callable, Runner or _Gemm)
    macs_cache = {} if macs_cache is None else macs_cache
    prefix = f'{tag}{size}px b{batch}'

    for i, entry in enumerate(entries):
        res = dict(key=entry.key, arch=entry.arch, mode=entry.mode, label=entry.label,
                   size=size, batch=batch, dtype=entry.compute_dtype)
        results[entry.key] = res
        reason = skip_reason(entry, device)
        if reason:
            res['skipped'] = reason
            progress.update(f'{prefix} | skip {entry.key}: {reason}')
            continue
        progress.update(f'{prefix} | build {i + 1}/{len(entries)} {entry.key}'
                        + (' (compiling)' if entry.mode_info.backend != 'eager' else ''))
        t0 = time.perf_counter()
        try:
            runner = build_runner(entry, x, device=device, threads=cfg.threads,
                                  keep_reference=with_accuracy)
            out = runner(x)  # first call (compilation happens here for some backends)
            _sync(device)
        except Exception as e:  # noqa: BLE001  (report, do not hide: the table shows the error)
            res['skipped'] = f'failed to build/run: {type(e).__name__}: {str(e).splitlines()[0][:200]}'
            progress.update(f'{prefix} | FAILED {entry.key}: {res["skipped"]}')
            continue
        res['build_s'] = time.perf_counter() - t0
        res['params'] = runner.params
        if runner.notes:
            res['notes'] = runner.notes
        if with_accuracy and runner.reference is not None and entry.mode != 'eager':
            with torch.inference_mode():
                ref = runner.reference(x)
            res['accuracy'] = compare_outputs(ref, out)
        runner.reference = None
        del out
        if cfg.flops:
            res['macs'] = _arch_macs(entry.arch, size, macs_cache)
        runners.append((entry.key, runner, runner))
    gemms = _gemms(device) if with_peak else []
    for g in gemms:
        runners.append((g.name, g, g))

    if not runners:
        return dict(results=list(results.values()), peaks={}, peaks_cpu_time={})

    times: Dict[str, List[float]] = {k: [] for k, _, _ in runners}
    cpu_times: Dict[str, List[float]] = {k: [] for k, _, _ in runners}
    warmup = cfg.warmup if warmup is None else warmup
    total = warmup + reps
    t_start = time.perf_counter()
    for r in range(total):
        timed = r >= warmup
        shift = r % len(runners)
        order = runners[shift:] + runners[:shift]   # rotate the start: no model is always first
        for key, fn, _ in order:
            _sync(device)
            c = time.process_time()
            t = time.perf_counter()
            out = fn(x)
            _sync(device)
            dt = time.perf_counter() - t
            dc = time.process_time() - c
            del out
            if timed:
                times[key].append(dt)
                cpu_times[key].append(dc)
        done = r + 1
        per = (time.perf_counter() - t_start) / done
        phase = 'warm-up' if not timed else 'timing'
        progress.update(f'{prefix} | {phase} round {done}/{total} | ~{per:.1f}s/round, '
                        f'{per * (total - done):.0f}s left')

    peaks: Dict[str, float] = {}
    peaks_cpu: Dict[str, float] = {}
    for g in gemms:
        peaks[g.name] = g.flops / (time_stats(times[g.name], 1)['median'] / 1e3) / 1e9
        peaks_cpu[g.name] = g.flops / (time_stats(cpu_times[g.name], 1)['median'] / 1e3) / 1e9
    fp32_peak = max([v for k, v in peaks.items() if 'fp32' in k], default=None)
    bf16_peak = max([v for k, v in peaks.items() if 'bf16' in k], default=None)
    fp32_peak_cpu = max([v for k, v in peaks_cpu.items() if 'fp32' in k], default=None)
    bf16_peak_cpu = max([v for k, v in peaks_cpu.items() if 'bf16' in k], default=None)

    for key, _, runner in runners:
        if key not in results:
            continue
        res = results[key]
        st = time_stats(times[key], batch)
        res['ms_per_img'] = st
        res['times_s'] = times[key]
        res['img_per_s'] = 1e3 / st['median']
        if device == 'cpu':
            # CPU time of the process: with one thread it leaves out the time spent waiting for a
            # core, the steadier figure on a shared machine (the wall clock is the paper's).
            cst = time_stats(cpu_times[key], batch)
            res['cpu_ms_per_img'] = cst
            res['cpu_times_s'] = cpu_times[key]
        macs = res.get('macs')
        if macs:
            gflops = 2.0 * macs / (st['median'] / 1e3) / 1e9
            res['gflop_s'] = gflops
            bf16 = res['dtype'] == 'bf16'
            peak = bf16_peak if bf16 else fp32_peak
            if peak:
                res['peak_gflop_s'] = peak
                res['pct_peak'] = 100.0 * gflops / peak
                res['roofline_ms_per_img'] = 2.0 * macs / (peak * 1e9) * 1e3
            peak_cpu = bf16_peak_cpu if bf16 else fp32_peak_cpu
            if peak_cpu and 'cpu_ms_per_img' in res:
                res['cpu_gflop_s'] = 2.0 * macs / (res['cpu_ms_per_img']['median'] / 1e3) / 1e9
                res['cpu_pct_peak'] = 100.0 * res['cpu_gflop_s'] / peak_cpu
                res['cpu_roofline_ms_per_img'] = 2.0 * macs / (peak_cpu * 1e9) * 1e3
        if isinstance(runner, Runner):
            runner.close()
    runners.clear()
    gc.collect()
    return dict(results=list(results.values()), peaks=peaks, peaks_cpu_time=peaks_cpu)


def _uptime() -> str:
    try:
        import subprocess
        return subprocess.run(['uptime'], capture_output=True, text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001
        try:
            return 'loadavg ' + ' '.join(f'{v:.2f}' for v in os.getloadavg())
        except OSError:
            return 'unknown'


def environment_info(device: str, threads: Optional[int]) -> Dict[str, Any]:
    """Versions, CPU model, bf16 support, threads and load: what a reader needs to judge figures."""
    info: Dict[str, Any] = dict(
        python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
        device=device, threads=torch.get_num_threads(), requested_threads=threads,
        cpu_count=os.cpu_count(), bf16=cpu_bf16_support(),
        flags_avx512=sorted(f for f in cpu_flags() if f.startswith(('avx512', 'amx'))))
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu'] = line.split(':', 1)[1].strip()
                    break
    except OSError:
        info['cpu'] = platform.processor()
    if device.startswith('cuda') and torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    for mod in ('mmcv', 'mmdet', 'mmpretrain', 'mmengine', 'timm', 'onnxruntime'):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            pass
    return info


def run_benchmark(cfg: BenchmarkConfig, progress: Optional[Progress] = None,
                  command: Optional[str] = None) -> Dict[str, Any]:
    """Run the table sizes, then the plot sweep; return everything as one JSON-able dict."""
    progress = progress or Progress(False)
    if cfg.device.startswith('cuda') and not torch.cuda.is_available():
        raise RuntimeError(f'--device {cfg.device} asked for, but CUDA is not available here')
    if cfg.threads and cfg.device == 'cpu':
        torch.set_num_threads(cfg.threads)
        os.environ.setdefault('OMP_NUM_THREADS', str(cfg.threads))
    batch = cfg.resolved_batch()
    started = time.time()
    out: Dict[str, Any] = dict(command=command, started=time.strftime('%Y-%m-%d %H:%M:%S'),
                               uptime_before=_uptime(),
                               env=environment_info(cfg.device, cfg.threads),
                               config=dict(sizes=cfg.sizes, batch=batch, device=cfg.device,
                                           threads=cfg.threads, warmup=cfg.warmup, reps=cfg.reps,
                                           reference=cfg.reference,
                                           entries=[e.key for e in cfg.entries]),
                               table=[], peaks={}, peaks_cpu_time={}, sweep=[], sweep_peaks={})
    macs_cache: Dict = {}
    for size in cfg.sizes:
        r = measure_size(cfg.entries, size, batch, cfg, progress, cfg.reps,
                         with_accuracy=cfg.check_accuracy, with_peak=cfg.peak,
                         macs_cache=macs_cache)
        out['table'].extend(r['results'])
        out['peaks'][str(size)] = r['peaks']
        out['peaks_cpu_time'][str(size)] = r['peaks_cpu_time']
    if cfg.plot_sizes and cfg.plot_entries:
        pbatch = cfg.plot_batch or batch
        preps = cfg.plot_reps or cfg.reps
        pwarm = cfg.warmup if cfg.plot_warmup is None else cfg.plot_warmup
        out['config'].update(plot_sizes=cfg.plot_sizes, plot_batch=pbatch, plot_reps=preps,
                             plot_warmup=pwarm, plot_entries=[e.key for e in cfg.plot_entries])
        for size in cfg.plot_sizes:
            r = measure_size(cfg.plot_entries, size, pbatch, cfg, progress, preps,
                             with_accuracy=False, with_peak=cfg.peak, macs_cache=macs_cache,
                             tag='sweep ', warmup=pwarm)
            out['sweep'].extend(r['results'])
            out['sweep_peaks'][str(size)] = r['peaks']
    progress.done(f'finished in {time.time() - started:.0f}s')
    out['uptime_after'] = _uptime()
    out['duration_s'] = time.time() - started
    _add_reference_ratios(out['table'], cfg.reference)
    return out


def _add_reference_ratios(rows: List[Dict[str, Any]], reference: Optional[str]) -> None:
    if not reference:
        return
    ref = {r['size']: r for r in rows if r['key'] == reference and 'ms_per_img' in r}
    for r in rows:
        base = ref.get(r['size'])
        if base is not None and 'ms_per_img' in r:
            r['speedup_vs_reference'] = base['ms_per_img']['median'] / r['ms_per_img']['median']
            if 'cpu_ms_per_img' in r and 'cpu_ms_per_img' in base:
                r['cpu_speedup_vs_reference'] = (base['cpu_ms_per_img']['median']
                                                 / r['cpu_ms_per_img']['median'])


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def _f(v: Optional[float], fmt: str) -> str:
    return '–' if v is None else format(v, fmt)


def markdown_table(result: Dict[str, Any], paper_cpu_ms: Optional[Dict[str, float]] = None) -> str:
    """The latency table (one block per input size) as GitHub markdown.

    ``paper_cpu_ms`` (backbone name -> published CPU milliseconds per image, e.g. the SHViT
    paper's Table 5 as ``tools/analysis_tools/benchmark_backbone.py`` passes it) adds a column
    with the published speed-up over the reference, for the eager and deploy rows of the
    backbones it names.
    """
    cfg = result['config']
    paper_ms = paper_cpu_ms or {}
    paper_col = paper_cpu_ms is not None
    ref = cfg.get('reference')
    ref_label = ref or 'reference'
    lines = []
    for size in cfg['sizes']:
        rows = [r for r in result['table'] if r['size'] == size]
        peaks = result['peaks'].get(str(size), {})
        head = (f'**{size}x{size}, batch {cfg["batch"]}, {cfg["device"]}'
                + (f', {cfg["threads"]} thread(s)' if cfg['device'] == 'cpu' else '')
                + f', median of {cfg["reps"]} interleaved repetitions**')
        if peaks:
            head += '  \nmeasured GEMM peak: ' + ', '.join(f'{k} {v:.0f} GFLOP/s'
                                                          for k, v in peaks.items())
        cpu = cfg['device'] == 'cpu'
        lines += [head, '',
                  '| backbone | mode | params (M) | GMACs | ms/img (median) | p25–p75 | img/s '
                  + ('| CPU-time ms/img ' if cpu else '')
                  + f'| GFLOP/s | % of peak | speed-up vs {ref_label} | '
                  + ('paper CPU speed-up | ' if paper_col else '') + 'min cos vs fp32 |',
                  '|---|---|---:|---:|---:|---:|---:|' + ('---:|' if cpu else '')
                  + '---:|' * (4 + paper_col)]
        paper_ref = paper_ms.get(ref.split(':')[0]) if ref else None
        for r in rows:
            name = ARCHS[r['arch']].label
            mode = MODES[r['mode']].label
            if 'skipped' in r:
                lines.append(f'| {name} | {mode} | | | skipped: {r["skipped"]} |'
                             + ' |' * (6 + paper_col + cpu))
                continue
            st = r['ms_per_img']
            paper = paper_ms.get(r['arch'])
            paper_ratio = (paper_ref / paper) if (paper and paper_ref and r['mode'] in
                                                  ('eager', 'deploy')) else None
            acc = r.get('accuracy', {}).get('cosine')
            gmacs = r['macs'] / 1e9 if r.get('macs') else None
            lines.append(
                f'| {name} | {mode} | {r["params"] / 1e6:.2f} | {_f(gmacs, ".2f")} '
                f'| {st["median"]:.1f} | {st["p25"]:.1f}–{st["p75"]:.1f} | {r["img_per_s"]:.1f} '
                + (f'| {_f(r.get("cpu_ms_per_img", {}).get("median"), ".1f")} ' if cpu else '')
                + f'| {_f(r.get("gflop_s"), ".0f")} | {_f(r.get("pct_peak"), ".0f")} '
                f'| {_f(r.get("speedup_vs_reference"), ".2f")} '
                + (f'| {_f(paper_ratio, ".2f")} ' if paper_col else '')
                + f'| {_f(acc, ".6f")} |')
        lines.append('')
    lines.append(f'before: `{result.get("uptime_before", "")}`  ')
    lines.append(f'after: `{result.get("uptime_after", "")}`  ')
    env = result.get('env', {})
    lines.append(f'CPU: {env.get("cpu", "?")}, torch {env.get("torch", "?")}, '
                 f'bf16 support: {env.get("bf16", {})}')
    return '\n'.join(lines)


def compare_entries(result: Dict[str, Any], comparisons: Sequence[Tuple[str, ...]],
                    size: Optional[int] = None) -> List[str]:
    """One line per comparison whose entries were measured at ``size`` (default 512 if measured,
    else the first table size), in the order given:

    * ``(label, slower_key, faster_key)``: ``'label: 2.00x'``, the ratio of their median latencies
      (wall clock; CPU time in brackets when measured on the CPU);
    * ``(label, key)``: the entry's latency against its fp32 roofline (its multiply-adds at the
      measured GEMM peak; needs the peak and FLOP counts).

    Which comparisons matter is the caller's business (``benchmark_backbone.py`` lists the
    project's).
    """
    sizes = result['config']['sizes']
    size = size or (512 if 512 in sizes else sizes[0])
    rows = {r['key']: r for r in result['table'] if r['size'] == size and 'ms_per_img' in r}

    def ms(key: str, clock: str = 'ms_per_img') -> Optional[float]:
        r = rows.get(key)
        return r[clock]['median'] if r and clock in r else None

    def ratio(num: str, den: str) -> Optional[str]:
        if not (ms(num) and ms(den)):
            return None
        text = f'{ms(num) / ms(den):.2f}x'
        if ms(num, 'cpu_ms_per_img') and ms(den, 'cpu_ms_per_img'):
            text += f' (CPU time: {ms(num, "cpu_ms_per_img") / ms(den, "cpu_ms_per_img"):.2f}x)'
        return text

    def roofline(key: str) -> Optional[str]:
        r = rows.get(key)
        if not (r and r.get('roofline_ms_per_img')):
            return None
        text = (f'{r["ms_per_img"]["median"]:.1f} ms/img = '
                f'{r["ms_per_img"]["median"] / r["roofline_ms_per_img"]:.2f}x the fp32 roofline '
                f'({r["roofline_ms_per_img"]:.1f} ms/img at {r["peak_gflop_s"]:.0f} GFLOP/s)')
        if r.get('cpu_roofline_ms_per_img'):
            c = r['cpu_ms_per_img']['median']
            text += (f'; CPU time {c:.1f} ms/img = {c / r["cpu_roofline_ms_per_img"]:.2f}x '
                     f'({r["cpu_roofline_ms_per_img"]:.1f} ms/img)')
        return text

    out = []
    for label, *keys in comparisons:
        text = ratio(*keys) if len(keys) == 2 else roofline(*keys)
        if text:
            out.append(f'{label}: {text}')
    return out


def plot_latency_vs_size(result: Dict[str, Any], path: str) -> Optional[str]:
    """Latency (ms/img) against input size for every entry measured at two or more sizes.

    Uses the sweep if there is one, else the table. Writes a small PNG; returns its path (None
    when there is nothing to plot).
    """
    rows = result.get('sweep') or result.get('table') or []
    series: Dict[str, List[Tuple[int, float]]] = {}
    labels: Dict[str, str] = {}
    for r in rows:
        if 'ms_per_img' in r:
            series.setdefault(r['key'], []).append((r['size'], r['ms_per_img']['median']))
            labels[r['key']] = r['label']
    series = {k: sorted(v) for k, v in series.items() if len(v) >= 2}
    if not series:
        return None
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    cfg = result['config']
    batch = cfg.get('plot_batch', cfg['batch']) if result.get('sweep') else cfg['batch']
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=80)
    for key, pts in series.items():
        style = '-o' if key.startswith('shvit') else '--s'
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, ms=3.5, lw=1.4, label=labels[key])
    ax.set_xlabel('input size (px, square)')
    ax.set_ylabel('latency (ms / image)')
    ax.set_yscale('log')
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
    ax.tick_params(axis='y', which='minor', labelsize=7)
    ax.set_xticks(sorted({p[0] for pts in series.values() for p in pts}))
    where = (f'{cfg["device"]}, {cfg["threads"]} thread(s)' if cfg['device'] == 'cpu'
             else cfg['device'])
    ax.set_title(f'Backbone latency vs input size ({where}, batch {batch})', fontsize=10)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=7, loc='upper left')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_json(result: Dict[str, Any], path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(result, f, indent=1, default=str)
    return path


def run_and_report(cfg: BenchmarkConfig, out_dir: str, command: Optional[str] = None,
                   progress: Optional[Progress] = None,
                   paper_cpu_ms: Optional[Dict[str, float]] = None,
                   comparisons: Sequence[Tuple[str, ...]] = ()) -> Dict[str, Any]:
    """:func:`run_benchmark`, then write ``latency.json``, ``latency.md`` (the command, the
    :func:`markdown_table` and the :func:`compare_entries` lines) and ``latency_vs_size.png``
    under ``out_dir`` and print the markdown. Returns the result."""
    result = run_benchmark(cfg, progress, command=command)
    os.makedirs(out_dir, exist_ok=True)
    table = markdown_table(result, paper_cpu_ms=paper_cpu_ms)
    targets = compare_entries(result, comparisons)
    png = plot_latency_vs_size(result, os.path.join(out_dir, 'latency_vs_size.png'))
    result['plot'] = png
    result['targets'] = targets
    json_path = write_json(result, os.path.join(out_dir, 'latency.json'))
    md = f'`{command}`\n\n{table}\n'
    if targets:
        md += '\n' + '\n'.join(f'- {t}' for t in targets) + '\n'
    with open(os.path.join(out_dir, 'latency.md'), 'w') as f:
        f.write(md)
    print(md)
    print(f'JSON: {json_path}')
    print(f'plot: {png if png else "(nothing measured at two or more sizes)"}')
    return result
