"""Time one training iteration (forward + backward + AdamW step) of detector or segmentor configs,
side by side and interleaved, on synthetic images with random boxes and masks or label maps: no
dataset needed. With ``precisions=('fp32', 'amp')`` each config is also timed under mixed precision
(the wrapper ``tools/train.py --amp`` uses: bf16 autocast of the dense parts on a capable CPU),
starting from the same weights. Models come without pretrained weights: an iteration's time does
not depend on their values."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, Sequence, Tuple

import torch
from mmengine.optim import OptimWrapper

from shvit_mm.apis.config import build_model, read_config
from shvit_mm.engine.amp import CPUAmpOptimWrapper

from .harness import Benchmark, markdown_table, summarize, synthetic_batch


def _num_classes(model: torch.nn.Module) -> int:
    for head in (getattr(getattr(model, 'roi_head', None), 'bbox_head', None),
                 getattr(model, 'bbox_head', None), getattr(model, 'decode_head', None)):
        if hasattr(head, 'num_classes'):
            return int(head.num_classes)
    return 80


@dataclass
class TrainStep(Benchmark):
    """Seconds per training iteration of each config (and precision) at ``shape`` (H, W)."""
    configs: Sequence[str] = ()
    shape: Tuple[int, int] = (800, 1333)
    batch_size: int = 2
    reps: int = 3
    threads: Any = None
    precisions: Sequence[str] = ('fp32', )

    def measure(self) -> Dict[str, Any]:
        bad = [p for p in self.precisions if p not in ('fp32', 'amp')]
        if bad:
            raise ValueError(f"precision must be 'fp32' or 'amp', got {bad[0]!r}")
        if 'amp' in self.precisions and torch.cuda.is_available():
            raise ValueError("the benchmark times CPU training; amp on CUDA is MMEngine's own")
        steps, params = {}, {}
        for config in self.configs:
            cfg = read_config(config)
            base = build_model(cfg, mode='train')
            inputs, samples, _ = synthetic_batch(cfg, self.shape, self.batch_size,
                                                 num_classes=_num_classes(base))
            for k, precision in enumerate(self.precisions):
                model = base if k == len(self.precisions) - 1 else copy.deepcopy(base)
                opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
                wrapper = (CPUAmpOptimWrapper if precision == 'amp' else OptimWrapper)(optimizer=opt)
                steps[config, precision] = lambda m=model, w=wrapper: self._step(m, w, inputs, samples)
                params[config, precision] = sum(p.numel() for p in model.parameters()) / 1e6
        times = self.interleave(steps)
        return dict(rows=[
            dict(config=c, precision=p, params_m=params[c, p], **{
                f'{k}_s': v for k, v in summarize(t['wall']).items() if k in ('median', 'min', 'max')})
            for (c, p), t in times.items()])

    @staticmethod
    def _step(model: torch.nn.Module, wrapper: OptimWrapper, inputs: torch.Tensor,
              samples: list) -> None:
        with wrapper.optim_context(model):
            losses = model(inputs, samples, mode='loss')
        wrapper.update_params(model.parse_losses(losses)[0])

    @staticmethod
    def markdown(result: Dict[str, Any]) -> str:
        """The rows as a markdown table, times relative to the last config."""
        (h, w), rows, cfg = result['config']['shape'], result['rows'], result['config']
        return '\n'.join([f'{h}x{w}, batch {cfg["batch_size"]}, median of {cfg["reps"]} '
                          'interleaved iterations (forward + backward + AdamW step)', '']
                         + markdown_table(['config', 'precision', 'params (M)', 's/iter (median)',
                                           'min-max', 'time vs last'], [
                             [r['config'], r['precision'], f"{r['params_m']:.2f}",
                              f"{r['median_s']:.2f}", f"{r['min_s']:.2f}-{r['max_s']:.2f}",
                              f"{r['median_s'] / rows[-1]['median_s']:.2f}x"] for r in rows], 2))
