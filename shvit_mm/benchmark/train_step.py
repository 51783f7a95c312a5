"""Time one training iteration (forward + backward + optimizer step) of detector configs, side by
side and interleaved, on synthetic images of a fixed size: no dataset needed. With
``precisions=('fp32', 'amp')`` each config is also timed under mixed precision (the wrapper
``tools/train.py --amp`` uses: bf16 autocast of the dense parts on a capable CPU), starting from
the same weights.

Models come from :func:`shvit_mm.apis.config.build_model` (``mmdet::`` names allowed) without
pretrained weights: the time of an iteration does not depend on their values."""
from __future__ import annotations

import copy
import time
from typing import Dict, List, Sequence

import torch

from shvit_mm.apis.config import build_model


def _batch(model, batch_size: int, height: int, width: int, seed: int = 0):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmdet.structures.mask import BitmapMasks
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(batch_size):
        inputs.append((torch.rand(3, height, width, generator=g) * 255).to(torch.uint8))
        s = DetDataSample(metainfo=dict(img_shape=(height, width), ori_shape=(height, width),
                                        pad_shape=(height, width), scale_factor=(1.0, 1.0),
                                        batch_input_shape=(height, width)))
        n = 5
        xy = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = torch.rand(n, 2, generator=g) * torch.tensor([width * 0.3, height * 0.3]) + 16
        boxes = torch.cat([xy, xy + wh], 1)
        masks = torch.zeros(n, height, width, dtype=torch.uint8)
        for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
            masks[i, y0:y1, x0:x1] = 1
        s.gt_instances = InstanceData(bboxes=boxes,
                                      labels=torch.randint(0, _num_classes(model), (n,),
                                                           generator=g),
                                      masks=BitmapMasks(masks.numpy(), height, width))
        samples.append(s)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


def _num_classes(model) -> int:
    for head in (getattr(getattr(model, 'roi_head', None), 'bbox_head', None),
                 getattr(model, 'bbox_head', None)):
        if head is not None and hasattr(head, 'num_classes'):
            return int(head.num_classes)
    return 80


def _wrapper(model, precision: str):
    from mmengine.optim import OptimWrapper

    from shvit_mm.engine.amp import CPUAmpOptimWrapper
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    if precision == 'fp32':
        return OptimWrapper(optimizer=opt)
    if precision == 'amp':
        if torch.cuda.is_available():
            raise ValueError('the benchmark times CPU training; amp on CUDA is MMEngine\'s own')
        return CPUAmpOptimWrapper(optimizer=opt)
    raise ValueError(f"precision must be 'fp32' or 'amp', got {precision!r}")


def time_train_steps(configs: Sequence[str], height: int = 800, width: int = 1333,
                     batch_size: int = 2, reps: int = 3, warmup: int = 1,
                     threads: int = 0, precisions: Sequence[str] = ('fp32', )) -> List[Dict]:
    """Median seconds per training iteration of each config (and precision), interleaved
    round-robin; the precisions of one config start from the same weights."""
    if threads:
        torch.set_num_threads(threads)
    runs, models, wrappers, batches = [], [], [], []
    for c in configs:
        base = build_model(c, mode='train')
        batch = _batch(base, batch_size, height, width)
        for k, precision in enumerate(precisions):
            model = base if k == len(precisions) - 1 else copy.deepcopy(base)
            runs.append((c, precision))
            models.append(model)
            wrappers.append(_wrapper(model, precision))
            batches.append(batch)
    times: List[List[float]] = [[] for _ in runs]
    for rep in range(warmup + reps):
        order = list(range(len(runs)))
        order = order[rep % len(order):] + order[:rep % len(order)]  # rotate who goes first
        for i in order:
            t0 = time.perf_counter()
            with wrappers[i].optim_context(models[i]):
                losses = models[i](**batches[i], mode='loss')
            loss, _ = models[i].parse_losses(losses)
            wrappers[i].update_params(loss)
            dt = time.perf_counter() - t0
            if rep >= warmup:
                times[i].append(dt)
            print(f'  rep {rep + 1}/{warmup + reps} {runs[i][0]} [{runs[i][1]}]: {dt:.2f} s'
                  + (' (warm-up)' if rep < warmup else ''), flush=True)
    out = []
    for (c, precision), m, t in zip(runs, models, times):
        t = sorted(t)
        out.append(dict(config=c, precision=precision, params_m=sum(p.numel() for p in m.parameters()) / 1e6,
                        median_s=t[len(t) // 2], min_s=t[0], max_s=t[-1]))
    return out


def format_markdown(rows: List[Dict], height: int, width: int, batch_size: int, reps: int) -> str:
    """:func:`time_train_steps`' rows as a markdown table, times relative to the last config."""
    ref = rows[-1]['median_s']
    lines = [f'{height}x{width}, batch {batch_size}, median of {reps} interleaved iterations '
             '(forward + backward + AdamW step)', '',
             '| config | precision | params (M) | s/iter (median) | min-max | time vs last |',
             '|---|---|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['config']} | {r.get('precision', 'fp32')} | {r['params_m']:.2f} | {r['median_s']:.2f} | "
                     f"{r['min_s']:.2f}-{r['max_s']:.2f} | {r['median_s'] / ref:.2f}x |")
    return '\n'.join(lines)
