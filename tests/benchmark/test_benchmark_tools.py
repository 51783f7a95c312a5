"""The latency benchmark and the FLOPs tool run end to end on tiny settings (no speed asserted);
the benchmarks build models with the tools' builder and take the figures they compare with as
arguments."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT as ROOT
BENCH = os.path.join(ROOT, 'tools', 'analysis_tools', 'benchmark_backbone.py')
FLOPS = os.path.join(ROOT, 'tools', 'analysis_tools', 'get_flops.py')
DETR = os.path.join(ROOT, 'tools', 'analysis_tools', 'benchmark_detr.py')
MASK_RCNN_S1 = os.path.join(ROOT, 'configs', 'mask_rcnn', 'shvit_s1.py')


def _run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f'exit {proc.returncode}\nSTDOUT\n{proc.stdout}\nSTDERR\n{proc.stderr}'
    return proc


def _load_tool(path):
    """A tool script as a module (its constants), without running its ``main``."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_benchmark_tool_end_to_end(tmp_path):
    out = tmp_path / 'bench'
    proc = _run([BENCH, '--models', 'shvit_s1:deploy', 'shvit_s1:cl', '--sizes', '64',
                 '--batch', '1', '--warmup', '1', '--reps', '3', '--plot-models', 'shvit_s1:deploy',
                 'shvit_s1:cl', '--plot-sizes', '64', '96', '--plot-reps', '2',
                 '--reference', 'shvit_s1:deploy', '--out-dir', str(out)])
    # Progress goes to stderr, the table to stdout.
    assert 'timing round 3/4' in proc.stderr
    assert '| backbone | mode |' in proc.stdout
    assert '| SHViT-S1 | deploy |' in proc.stdout and '| SHViT-S1 | deploy+CL |' in proc.stdout
    assert 'benchmark_backbone.py --models shvit_s1:deploy' in proc.stdout  # the command is shown

    data = json.loads((out / 'latency.json').read_text())
    rows = {r['key']: r for r in data['table']}
    assert set(rows) == {'shvit_s1:deploy', 'shvit_s1:cl'}
    for r in rows.values():
        assert r['size'] == 64 and r['batch'] == 1
        assert len(r['times_s']) == 3 and all(t > 0 for t in r['times_s'])
        st = r['ms_per_img']
        assert st['min'] <= st['p25'] <= st['median'] <= st['p75'] <= st['max']
        assert len(r['cpu_times_s']) == 3 and r['cpu_ms_per_img']['median'] > 0
        assert r['macs'] > 0 and r['gflop_s'] > 0 and r['pct_peak'] > 0
    # Channels-last computes the same features as the fused NCHW model.
    assert rows['shvit_s1:cl']['accuracy']['cosine'] > 0.99999
    assert rows['shvit_s1:deploy']['speedup_vs_reference'] == pytest.approx(1.0)
    assert any('fp32' in k for k in data['peaks']['64'])
    # The sweep measured both models at both sizes and the plot was written.
    sweep = {(r['key'], r['size']) for r in data['sweep'] if 'ms_per_img' in r}
    assert sweep == {(k, s) for k in rows for s in (64, 96)}
    png = out / 'latency_vs_size.png'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert (out / 'latency.md').read_text().startswith('`python ')
    assert data['uptime_before'] and data['env']['torch']


def test_unknown_model_is_a_clear_error():
    from shvit_mm.benchmark.zoo import parse_entries
    with pytest.raises(KeyError, match='known: shvit_s1'):
        parse_entries(['shvit_s9'])
    with pytest.raises(KeyError, match='Unknown mode'):
        parse_entries(['shvit_s1:turbo'])
    entries = parse_entries(['shvit_s4:deploy,resnet50', 'shvit_s4:deploy'])
    assert [e.key for e in entries] == ['shvit_s4:deploy', 'resnet50:eager']


def test_summarize():
    from shvit_mm.benchmark.harness import summarize
    st = summarize([0.4, 0.1, 0.2, 0.3, 0.5], 1e3 / 10)  # seconds per batch of 10 -> ms per image
    assert st['median'] == pytest.approx(30.0)
    assert st['p25'] == pytest.approx(20.0) and st['p75'] == pytest.approx(40.0)
    assert st['min'] == pytest.approx(10.0) and st['n'] == 5
    # a true median: the mean of the two middle values of an even count
    assert summarize([4.0, 1.0, 3.0, 2.0])['median'] == pytest.approx(2.5)
    assert summarize([2.0])['p25'] == summarize([2.0])['p75'] == 2.0


def test_flops_of_backbones_match_the_paper_scale():
    from shvit_mm.benchmark.complexity import backbone_complexity
    # Paper Table 7 / official release: backbone-only parameters (BN included, i.e. not fused).
    s1 = backbone_complexity('shvit_s1', 224, deploy=False)
    assert s1['params'] == pytest.approx(6.0092e6, abs=100)
    # S4 costs about 4.0 G multiply-adds at 512x512 (4x its 256x256 cost of ~1 G, paper Table 7).
    s4 = backbone_complexity('shvit_s4', 512, deploy=True)
    assert 3.9e9 < s4['flops'] < 4.1e9
    # Fusing removes BN parameters but no multiply-adds of the convolutions.
    s1_fused = backbone_complexity('shvit_s1', 224, deploy=True)
    assert s1_fused['params'] < s1['params']
    assert s1_fused['flops'] <= s1['flops']


def test_get_flops_tool_on_backbone(tmp_path):
    proc = _run([FLOPS, 'shvit_s1', '--shape', '128', '--json', str(tmp_path / 'f.json')])
    assert 'FLOPs (multiply-adds)' in proc.stdout and 'input shape: (1, 3, 128, 128)' in proc.stdout
    data = json.loads((tmp_path / 'f.json').read_text())
    assert data['kind'] == 'backbone' and data['flops'] > 0


def test_get_flops_tool_on_detector_config(tmp_path):
    # The project's Mask R-CNN config, at a small odd image size (no dataset, no checkpoint).
    proc = _run([FLOPS, MASK_RCNN_S1, '--shape', '200', '250', '--json', str(tmp_path / 'd.json')])
    assert 'detector:' in proc.stdout and 'by part:' in proc.stdout
    data = json.loads((tmp_path / 'd.json').read_text())
    assert data['detector'] == 'MaskRCNN' and data['codebase'] == 'mmdet'
    # The tool counts the model that the tools' builder makes from the config.
    from shvit_mm.apis.config import build_model
    assert data['params'] == _n_params(build_model(MASK_RCNN_S1, init=False))
    assert tuple(data['padded_shape']) == (224, 256)  # padded to the preprocessor's divisor 32
    parts = data['by_module']
    assert set(parts) >= {'backbone', 'neck', 'rpn_head', 'roi_head'}
    assert all(parts[k]['flops'] > 0 for k in ('backbone', 'neck', 'rpn_head', 'roi_head'))
    assert sum(p['flops'] for p in parts.values()) == pytest.approx(data['flops'], rel=1e-6)
    # The backbone's share equals the backbone counted on its own at the padded size.
    from shvit_mm.benchmark.complexity import backbone_complexity
    from shvit_mm.models import SHViT
    alone = backbone_complexity(SHViT(arch='s1'), (224, 256), deploy=False)
    assert parts['backbone']['flops'] == alone['flops']
    assert parts['backbone']['params'] == alone['params']


def test_benchmarks_build_models_with_the_tools_builder(monkeypatch, tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader
    import torch
    from shvit_mm.apis import config as api
    from shvit_mm.benchmark import complexity, detr_speed, train_step
    from shvit_mm.benchmark import model_speed
    for module in (complexity, detr_speed, model_speed, train_step):
        assert module.build_model is api.build_model and module.read_config is api.read_config

    def no_download(*args, **kwargs):
        raise AssertionError(f'a checkpoint load was attempted: {args} {kwargs}')

    monkeypatch.setattr(CheckpointLoader, 'load_checkpoint', classmethod(no_download))
    monkeypatch.setattr(torch.hub, 'load_state_dict_from_url', no_download)
    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    monkeypatch.setattr(torch.hub, '_hub_dir', str(tmp_path))  # no cached checkpoint either
    # The config asks for the official ImageNet weights (github.com/ysj9909/SHViT releases) ...
    assert "'Pretrained'" in str(api.read_config(MASK_RCNN_S1).model.backbone.init_cfg)
    # ... and neither the builder (init_weights included) nor the FLOPs counter loads them.
    model = api.build_model(MASK_RCNN_S1)
    for name, module in model.named_modules():
        assert 'Pretrained' not in str(getattr(module, 'init_cfg', None)), name
    info = complexity.config_complexity(MASK_RCNN_S1, 64)
    assert info['params'] == _n_params(model)
    assert info['by_module']['backbone']['params'] == _n_params(model.backbone)


def _latency_row(key, size, ms, cpu_ms, macs=None, **extra):
    from shvit_mm.benchmark.harness import summarize
    from shvit_mm.benchmark.zoo import parse_entries
    entry = parse_entries([key])[0]
    row = dict(key=key, arch=entry.arch, mode=entry.mode, label=entry.label, size=size, batch=1,
               dtype=entry.compute_dtype, params=int(1e6), macs=macs, img_per_s=1e3 / ms,
               ms_per_img=summarize([ms]), cpu_ms_per_img=summarize([cpu_ms]))
    row.update(extra)
    return row


def test_latency_report_takes_the_paper_figures_and_targets_as_arguments():
    from shvit_mm.benchmark.latency import LatencyBenchmark, compare_entries
    markdown_table = LatencyBenchmark.markdown
    tool = _load_tool(BENCH)
    rows = [_latency_row('shvit_s4:deploy', 512, 10.0, 8.0, 4e9, roofline_ms_per_img=5.0,
                         peak_gflop_s=1600.0, cpu_roofline_ms_per_img=4.0),
            _latency_row('shvit_s4:bf16', 512, 5.0, 4.0),
            _latency_row('resnet50:eager', 512, 40.0, 36.0),
            dict(key='poolformer_s12:eager', arch='poolformer_s12', mode='eager', size=512,
                 skipped='mmpretrain is not installed')]
    result = dict(config=dict(sizes=[512], batch=1, device='cpu', threads=1, reps=1,
                              reference='resnet50:eager'), table=rows, peaks={})
    plain = markdown_table(result)
    assert 'paper' not in plain
    table = markdown_table(result, paper_cpu_ms=tool.PAPER_CPU_MS)
    lines = table.splitlines()
    head = next(line for line in lines if line.startswith('| backbone'))
    assert 'paper CPU speed-up' in head
    ncols = head.count('|')
    assert all(line.count('|') == ncols for line in lines if line.startswith('|'))
    # the published ResNet-50 / SHViT-S4 CPU ratio, 19.0 / 5.0 ms
    assert '| SHViT-S4 | deploy |' in table and '| 3.80 |' in table
    # without the figures the column is left out, and every row still fits the header
    assert all(line.count('|') == ncols - 1 for line in plain.splitlines() if line.startswith('|'))
    assert compare_entries(result, tool.TARGETS) == [
        'ResNet-50 (eager) / SHViT-S4 (deploy): 4.00x (CPU time: 4.50x)',
        'SHViT-S4 (deploy): 10.0 ms/img = 2.00x the fp32 roofline (5.0 ms/img at 1600 GFLOP/s); '
        'CPU time 8.0 ms/img = 2.00x (4.0 ms/img)',
        'SHViT-S4 bf16 (compile) faster than fp32 (deploy): 2.00x (CPU time: 2.00x)']


def test_detr_report_takes_the_paper_figures_as_an_argument():
    from shvit_mm.benchmark.detr_speed import DetrSpeed
    format_markdown = DetrSpeed.markdown
    tool = _load_tool(DETR)
    keys = ('total', 'trainable', 'transformer', 'encoder', 'decoder', 'backbone', 'neck',
            'bbox_head')
    layout = dict(encoder=['8x32'] * 6, decoder=['8x32'] * 6)
    result = dict(config=dict(batch_size=1, height=64, width=96, reps=1, warmup=0), devices={},
                  not_shared=[], attention=dict(multi=layout, single=layout),
                  params=dict(multi=dict.fromkeys(keys, 2_000_000),
                              single=dict.fromkeys(keys, 1_000_000)))
    assert 'Table 9' not in format_markdown(result)
    text = format_markdown(result, paper=tool.PAPER_TABLE9)
    assert 'Paper (Table 9, whole model on a GPU): 25.4 -> 31.4 FPS, 1.24x.' in text
    assert '| paper (Table 9) | 40.0 | 37.1 | -2.9 |' in text
    # figures stored with a result (as run_and_report does) are shown too
    assert format_markdown(dict(result, paper=tool.PAPER_TABLE9)) == text
