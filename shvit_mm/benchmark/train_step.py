"""Time one training iteration (forward + backward + optimizer step) of detector configs, side by
side and interleaved, on synthetic images of a fixed size: no dataset needed.

Models come from :func:`shvit_mm.apis.config.build_model` (``mmdet::`` names allowed) without
pretrained weights: the time of an iteration does not depend on their values."""
from __future__ import annotations

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
        s.gt_instances = InstanceData(bboxes=boxes, labels=torch.randint(0, 80, (n,), generator=g),
                                      masks=BitmapMasks(masks.numpy(), height, width))
        samples.append(s)
    return model.data_preprocessor(dict(inputs=inputs, data_samples=samples), True)


def time_train_steps(configs: Sequence[str], height: int = 800, width: int = 1333,
                     batch_size: int = 2, reps: int = 3, warmup: int = 1,
                     threads: int = 0) -> List[Dict]:
    """Median seconds per training iteration of each config, interleaved round-robin."""
    if threads:
        torch.set_num_threads(threads)
    models = [build_model(c, mode='train') for c in configs]
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-4, weight_decay=0.05) for m in models]
    batches = [_batch(m, batch_size, height, width) for m in models]
    times: List[List[float]] = [[] for _ in configs]
    for rep in range(warmup + reps):
        order = list(range(len(configs)))
        order = order[rep % len(order):] + order[:rep % len(order)]  # rotate who goes first
        for i in order:
            t0 = time.perf_counter()
            losses = models[i](**batches[i], mode='loss')
            loss, _ = models[i].parse_losses(losses)
            opts[i].zero_grad()
            loss.backward()
            opts[i].step()
            dt = time.perf_counter() - t0
            if rep >= warmup:
                times[i].append(dt)
            print(f'  rep {rep + 1}/{warmup + reps} {configs[i]}: {dt:.2f} s'
                  + (' (warm-up)' if rep < warmup else ''), flush=True)
    out = []
    for c, m, t in zip(configs, models, times):
        t = sorted(t)
        out.append(dict(config=c, params_m=sum(p.numel() for p in m.parameters()) / 1e6,
                        median_s=t[len(t) // 2], min_s=t[0], max_s=t[-1]))
    return out


def format_markdown(rows: List[Dict], height: int, width: int, batch_size: int, reps: int) -> str:
    """:func:`time_train_steps`' rows as a markdown table, times relative to the last config."""
    ref = rows[-1]['median_s']
    lines = [f'{height}x{width}, batch {batch_size}, median of {reps} interleaved iterations '
             '(forward + backward + AdamW step)', '',
             '| config | params (M) | s/iter (median) | min-max | time vs last |',
             '|---|---:|---:|---:|---:|']
    for r in rows:
        lines.append(f"| {r['config']} | {r['params_m']:.2f} | {r['median_s']:.2f} | "
                     f"{r['min_s']:.2f}-{r['max_s']:.2f} | {r['median_s'] / ref:.2f}x |")
    return '\n'.join(lines)
