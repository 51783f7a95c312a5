"""What every benchmark here shares, in the shape of MMDetection's ``BaseBenchmark``: a run under a
fixed thread count that records the environment and the load before and after
(:meth:`Benchmark.run`), interleaved timing on two clocks (:meth:`Benchmark.interleave`), time per
sub-module (:class:`PartTimer`), synthetic inputs per codebase, and JSON + markdown output."""
from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from shvit_mm.apis.config import codebase_of
from shvit_mm.inference import wrap_forward
from shvit_mm.utils.cpu import cpu_bf16_support, cpu_flags, cpu_model


def sync(device: str) -> None:
    """Wait for queued GPU work, so that a clock read after it counts it."""
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def summarize(values: Sequence[float], scale: float = 1.0) -> Dict[str, float]:
    """Median, 25 % / 75 % quantiles (linear interpolation), min, max, mean and count of
    ``values`` times ``scale`` (e.g. ``1e3 / batch``: seconds per batch -> ms per image)."""
    v = [x * scale for x in values]
    q = statistics.quantiles(v, n=4, method='inclusive') if len(v) > 1 else v * 3
    return dict(median=statistics.median(v), p25=q[0], p75=q[2], min=min(v), max=max(v),
                mean=statistics.fmean(v), n=len(v))


def uptime() -> str:
    """The ``uptime`` line: how busy the machine was (load averages over 1, 5, 15 minutes)."""
    try:
        return subprocess.run(['uptime'], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'load average: ' + ', '.join(f'{v:.2f}' for v in os.getloadavg())


def environment(device: str = 'cpu', threads: Optional[int] = None) -> Dict[str, Any]:
    """Versions, CPU model and bf16 support, threads and GPU: what a reader needs to judge figures."""
    info: Dict[str, Any] = dict(
        python=platform.python_version(), torch=torch.__version__, platform=platform.platform(),
        device=device, threads=torch.get_num_threads(), requested_threads=threads,
        cpu_count=os.cpu_count(), cpu=cpu_model(), bf16=cpu_bf16_support(),
        flags_avx512=sorted(f for f in cpu_flags() if f.startswith(('avx512', 'amx'))))
    if device.startswith('cuda') and torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    for package in ('mmengine', 'mmcv', 'mmdet', 'mmsegmentation', 'mmpretrain', 'timm',
                    'onnxruntime'):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return info


def synthetic_batch(cfg: Any, shape: Tuple[int, int], batch_size: int = 1, device: str = 'cpu',
                    seed: int = 0, num_classes: int = 0) -> tuple:
    """Random images of ``shape`` (H, W) for the model of config ``cfg`` as its data preprocessor
    hands them over at test time: normalised, padded to its divisor (MMDetection's
    ``pad_size_divisor``, MMSegmentation's ``test_cfg.size_divisor``), with the data samples the
    codebase needs (None for a classifier). ``num_classes`` > 0 adds ground truth for
    ``mode='loss'``: five boxes per image with labels and box-shaped masks (detection), or a label
    map of random rectangles on background 0 (segmentation).
    Returns (inputs, data samples, padded (H, W))."""
    scope, (h, w) = codebase_of(cfg), shape
    pre = cfg.model.get('data_preprocessor') or {}
    divisor = int(((pre.get('test_cfg') or {}).get('size_divisor') if scope == 'mmseg'
                   else pre.get('pad_size_divisor')) or 1)
    ph, pw = -(-h // divisor) * divisor, -(-w // divisor) * divisor
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch_size, 3, ph, pw, generator=gen).to(device)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(ph, pw))
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample as Sample
    elif scope == 'mmdet':
        from mmdet.structures import DetDataSample as Sample
        meta.update(batch_input_shape=(ph, pw), scale_factor=(1.0, 1.0), img_id=0, flip=False,
                    flip_direction=None)
    else:
        return inputs, None, (ph, pw)
    samples = [Sample(metainfo=meta) for _ in range(batch_size)]
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        for sample in samples if num_classes else ():
            label = torch.zeros(1, ph, pw, dtype=torch.long)  # padded as the inputs
            for y0, x0, y1, x1 in (torch.rand(5, 4, generator=gen) * torch.tensor([h, w, h, w])
                                   ).long().tolist():
                label[:, min(y0, y1):max(y0, y1) + 1, min(x0, x1):max(x0, x1) + 1] = int(
                    torch.randint(1, max(num_classes, 2), (1, ), generator=gen))
            sample.gt_sem_seg = PixelData(data=label.to(device))
        return inputs, samples, (ph, pw)
    for sample in samples if num_classes else ():
        from mmdet.structures.mask import BitmapMasks
        from mmengine.structures import InstanceData
        xy = torch.rand(5, 2, generator=gen) * torch.tensor([w * .7, h * .7])
        boxes = torch.cat([xy, xy + torch.rand(5, 2, generator=gen) * torch.tensor([w * .3, h * .3])
                           + 16], 1)
        masks = torch.zeros(5, ph, pw, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        sample.gt_instances = InstanceData(
            bboxes=boxes.to(device), masks=BitmapMasks(masks.numpy(), ph, pw),
            labels=torch.randint(num_classes, (5, ), generator=gen).to(device))
    return inputs, samples, (ph, pw)


def markdown_table(head: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 1) -> List[str]:
    """A GitHub markdown table, the first ``left`` columns left-aligned, the others right."""
    return (['| ' + ' | '.join(head) + ' |', '|' + '---|' * left + '---:|' * (len(head) - left)]
            + ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows])


def write_json(obj: Any, path: str) -> str:
    """Write ``obj`` to ``path`` (folders made; what JSON lacks written as ``str``)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(obj, f, indent=1, default=str)
    return path


class PartTimer:
    """Seconds spent in the ``forward`` of chosen sub-modules during a call.

    ``parts`` maps a name to modules, whose ``forward`` is wrapped
    (:func:`shvit_mm.inference.wrap_forward`: direct ``.forward()`` calls count too); with
    ``nested=False`` a part called inside another timed part is not counted again (the outermost
    call wins)."""

    def __init__(self, parts: Dict[Any, Sequence[torch.nn.Module]], device: str = 'cpu',
                 nested: bool = False, clock: Callable[[], float] = time.perf_counter) -> None:
        self.device, self.nested, self.clock = device, nested, clock
        self.active, self.depth, self.elapsed = False, 0, dict.fromkeys(parts, 0.0)
        for name, modules in parts.items():
            for m in modules:
                wrap_forward(m, functools.partial(self._timed, name))

    def _timed(self, name: Any, original: Callable, *args, **kwargs) -> Any:
        if not self.active or (self.depth and not self.nested):
            return original(*args, **kwargs)
        sync(self.device)
        self.depth, start = self.depth + 1, self.clock()
        try:
            return original(*args, **kwargs)
        finally:
            sync(self.device)
            self.elapsed[name] += self.clock() - start
            self.depth -= 1

    def __call__(self, fn: Callable[[], Any]) -> Dict[Any, float]:
        """Run ``fn()``; return the seconds spent in each part."""
        self.elapsed, self.active = dict.fromkeys(self.elapsed, 0.0), True
        try:
            fn()
        finally:
            self.active = False
        return dict(self.elapsed)


@dataclass
class Benchmark:
    """Base of the benchmarks: a subclass adds its options as fields and implements ``measure()``
    (build the candidates, time them with :meth:`interleave`, return the figures) and
    ``markdown(result)`` (its table)."""
    device: str = 'cpu'
    threads: Optional[int] = 1  # CPU threads during the run; None keeps PyTorch's setting
    reps: int = 5
    warmup: int = 1
    progress: bool = False      # progress lines on stderr

    def __post_init__(self) -> None:
        if self.reps < 1 or self.warmup < 0:
            raise ValueError(f'reps must be >= 1 and warmup >= 0, got reps={self.reps}, '
                             f'warmup={self.warmup}')
        self._t0 = time.perf_counter()

    def say(self, msg: str) -> None:
        if self.progress:
            s = int(time.perf_counter() - self._t0)
            print(f'[{s // 60:d}m{s % 60:02d}s] {msg}', file=sys.stderr, flush=True)

    def run(self, command: Optional[str] = None) -> Dict[str, Any]:
        """``measure()`` under the chosen thread count; returns its figures with the command, the
        options (``config``), the environment and the load before and after."""
        if self.device.startswith('cuda') and not torch.cuda.is_available():
            raise RuntimeError(f'device {self.device} asked for, but CUDA is not available here')
        saved, started = torch.get_num_threads(), time.time()
        if self.threads:
            torch.set_num_threads(self.threads)
            os.environ.setdefault('OMP_NUM_THREADS', str(self.threads))  # for child processes
        result = dict(command=command, started=time.strftime('%Y-%m-%d %H:%M:%S'),
                      config={f.name: getattr(self, f.name) for f in fields(self)
                              if f.name != 'progress'},
                      uptime_before=uptime(), env=environment(self.device, self.threads))
        try:
            result.update(self.measure())
        finally:
            torch.set_num_threads(saved)
        self.say(f'finished in {time.time() - started:.0f}s')
        return dict(result, uptime_after=uptime(), duration_s=time.time() - started)

    def interleave(self, fns: Dict[Any, Callable[[], Any]], reps: Optional[int] = None,
                   warmup: Optional[int] = None, device: Optional[str] = None, tag: str = '',
                   keep: bool = False) -> Dict[Any, Dict[str, list]]:
        """Time the no-argument callables ``fns``: ``warmup`` untimed then ``reps`` timed rounds,
        each calling every one once, starting one further along each round, so that a burst of
        load on a shared machine hits all alike. Returns, per name, the ``wall`` and ``cpu``
        (process) seconds of each timed call, the device synchronised around it, and with
        ``keep`` its return value under ``returns``."""
        reps, warmup = reps or self.reps, self.warmup if warmup is None else warmup
        device, names, total, start = device or self.device, list(fns), warmup + reps, time.time()
        times = {n: dict(wall=[], cpu=[], returns=[]) for n in names}
        for r in range(total):
            for name in names[r % len(names):] + names[:r % len(names)]:
                sync(device)
                wall, cpu = time.perf_counter(), time.process_time()
                out = fns[name]()
                sync(device)
                if r >= warmup:
                    times[name]['wall'].append(time.perf_counter() - wall)
                    times[name]['cpu'].append(time.process_time() - cpu)
                    times[name]['returns'].append(out if keep else None)
                del out
            per = (time.time() - start) / (r + 1)
            self.say(f'{tag}{"timing" if r >= warmup else "warm-up"} round {r + 1}/{total} | '
                     f'~{per:.1f}s/round, {per * (total - r - 1):.0f}s left')
        return times

    def report(self, result: Dict[str, Any], json_path: Optional[str] = None,
               md_path: Optional[str] = None, **kwargs) -> str:
        """Print the command, ``markdown(result, **kwargs)`` and the machine and its load; write
        them to ``md_path`` and ``result`` as JSON to ``json_path``. Returns the markdown."""
        env = result.get('env', {})
        text = '\n'.join([f'`{result["command"]}`', ''] * bool(result.get('command')) + [
            self.markdown(result, **kwargs), '',
            f'CPU: {env.get("cpu", "?")}, {env.get("threads", "?")} thread(s), torch '
            f'{env.get("torch", "?")}, bf16 support: {env.get("bf16", {})}  ',
            f'before: `{result.get("uptime_before", "")}`  ',
            f'after: `{result.get("uptime_after", "")}`']) + '\n'
        if md_path:
            os.makedirs(os.path.dirname(os.path.abspath(md_path)), exist_ok=True)
            with open(md_path, 'w') as f:
                f.write(text)
        print(text + (f'\nJSON: {write_json(result, json_path)}' if json_path else ''), flush=True)
        return text
