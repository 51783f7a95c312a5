"""The benchmark harness: interleaved timing, part timing, run bookkeeping and synthetic inputs."""
import os.path as osp
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from conftest import REPO_ROOT
from shvit_mm.benchmark.harness import Benchmark, PartTimer, markdown_table, synthetic_batch


@dataclass
class _Calls(Benchmark):
    """Records the order of the calls it times."""

    def measure(self):
        calls = []
        fns = {name: (lambda n=name: calls.append(n) or n.upper()) for name in 'abc'}
        return dict(times=self.interleave(fns, keep=True), calls=calls,
                    threads_inside=torch.get_num_threads())


def test_interleave_runs_every_candidate_once_per_round_rotating_the_start():
    before = torch.get_num_threads()
    result = _Calls(reps=3, warmup=1, threads=1).run('cmd')
    # one warm-up and three timed rounds; each round starts one candidate further along
    assert result['calls'] == list('abc' 'bca' 'cab' 'abc')
    for name, t in result['times'].items():
        assert len(t['wall']) == len(t['cpu']) == 3 and min(t['wall']) >= 0
        assert t['returns'] == [name.upper()] * 3
    # the run fixed the thread count while measuring and restored it after
    assert result['threads_inside'] == 1 and torch.get_num_threads() == before
    assert result['command'] == 'cmd' and result['env']['threads'] == 1
    assert result['env']['cpu'] and 'load average' in result['uptime_before']
    assert result['uptime_after'] and result['duration_s'] >= 0


def test_bad_repetition_counts_are_refused():
    with pytest.raises(ValueError, match='reps must be >= 1'):
        _Calls(reps=0)
    with pytest.raises(ValueError, match='warmup >= 0'):
        _Calls(warmup=-1)


def test_part_timer_counts_the_outermost_part_unless_nested():
    inner = nn.Identity()
    outer = nn.Sequential(inner)
    x = torch.zeros(1)
    flat = PartTimer({'outer': [outer], 'inner': [inner]})
    times = flat(lambda: outer(x))
    assert times['outer'] > 0 and times['inner'] == 0  # inside a timed part: not counted again
    assert flat(lambda: inner.forward(x))['inner'] > 0  # direct .forward() calls count too
    nested = PartTimer({'outer': [outer], 'inner': [inner]}, nested=True)
    times = nested(lambda: outer(x))
    assert times['outer'] >= times['inner'] > 0
    assert outer(x) is not None  # outside a timed call the wrapped modules run as before


def test_markdown_table_aligns_text_left_and_numbers_right():
    assert markdown_table(['a', 'b', 'c'], [[1, 2, 3]], left=2) == [
        '| a | b | c |', '|---|---|---:|', '| 1 | 2 | 3 |']


def test_synthetic_batches_per_codebase():
    from shvit_mm.apis.config import build_model, read_config
    det = read_config(osp.join(REPO_ROOT, 'configs/mask_rcnn/shvit_s1.py'))
    x, samples, padded = synthetic_batch(det, (50, 70), batch_size=2, num_classes=3)
    assert x.shape == (2, 3, 64, 96) and padded == (64, 96)  # the preprocessor's divisor 32
    assert samples[0].img_shape == (50, 70) and samples[0].batch_input_shape == (64, 96)
    gt = samples[1].gt_instances
    assert len(gt) == 5 and gt.labels.max() < 3 and gt.masks.masks.shape == (5, 64, 96)
    # the batch is what a detector's loss needs
    model = build_model(det, mode='train')
    losses = model(x, samples, mode='loss')
    assert torch.isfinite(model.parse_losses(losses)[0])
    seg = read_config(osp.join(REPO_ROOT, 'configs/sem_fpn/shvit_s1.py'))
    x, samples, _ = synthetic_batch(seg, (64, 64))
    assert type(samples[0]).__name__ == 'SegDataSample' and samples[0].ori_shape == (64, 64)
    assert 'gt_sem_seg' not in samples[0]
    x, samples, padded = synthetic_batch(seg, (60, 64), batch_size=2, num_classes=150)
    label = samples[1].gt_sem_seg.data
    assert padded == (64, 64) and label.shape == (1, 64, 64)  # padded as the inputs
    assert label.min() == 0 and 0 < label.max() < 150  # background and some rectangles
    model = build_model(seg, mode='train')
    losses = model(x, samples, mode='loss')
    assert torch.isfinite(model.parse_losses(losses)[0])


def test_train_step_times_both_precisions(capsys):
    from shvit_mm.benchmark.train_step import TrainStep
    config = osp.join(REPO_ROOT, 'configs/retinanet/shvit_s1.py')
    bench = TrainStep(configs=[config], shape=(64, 64), batch_size=1, reps=2, warmup=0,
                      threads=1, precisions=('fp32', 'amp'))
    result = bench.run()
    rows = result['rows']
    assert [r['precision'] for r in rows] == ['fp32', 'amp']
    assert all(0 < r['min_s'] <= r['median_s'] <= r['max_s'] for r in rows)
    assert rows[0]['params_m'] == rows[1]['params_m'] > 0
    text = bench.markdown(result)
    assert '| config | precision | params (M) | s/iter (median) | min-max | time vs last |' in text
    assert text.rstrip().endswith('| 1.00x |')


def test_train_step_times_a_segmentor():
    from shvit_mm.benchmark.train_step import TrainStep
    config = osp.join(REPO_ROOT, 'configs/demo/sem_fpn_shvit_s1_demo.py')
    rows = TrainStep(configs=[config], shape=(64, 64), batch_size=2, reps=1, warmup=0,
                     threads=1).run()['rows']
    assert [r['precision'] for r in rows] == ['fp32'] and rows[0]['median_s'] > 0
