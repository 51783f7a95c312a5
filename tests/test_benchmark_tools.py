"""The latency benchmark and the FLOPs tool run end to end on tiny settings (no speed asserted)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, 'tools', 'analysis_tools', 'benchmark_backbone.py')
FLOPS = os.path.join(ROOT, 'tools', 'analysis_tools', 'get_flops.py')


def _run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f'exit {proc.returncode}\nSTDOUT\n{proc.stdout}\nSTDERR\n{proc.stderr}'
    return proc


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


def test_time_stats():
    from shvit_mm.benchmark.latency import time_stats
    st = time_stats([0.4, 0.1, 0.2, 0.3, 0.5], batch=10)  # seconds per batch of 10
    assert st['median'] == pytest.approx(30.0)
    assert st['p25'] == pytest.approx(20.0) and st['p75'] == pytest.approx(40.0)
    assert st['min'] == pytest.approx(10.0) and st['n'] == 5


def test_flops_of_backbones_match_the_paper_scale():
    from shvit_mm.benchmark.complexity import backbone_complexity
    # SPEC section 1: backbone-only parameters (BN included, i.e. not fused).
    s1 = backbone_complexity('shvit_s1', 224, deploy=False)
    assert s1['params'] == pytest.approx(6.0092e6, abs=100)
    # SPEC: S4 costs about 4.0 G multiply-adds at 512x512.
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
    cfg = os.path.join(ROOT, 'configs', 'mask_rcnn', 'shvit_s1.py')
    proc = _run([FLOPS, cfg, '--shape', '200', '250', '--json', str(tmp_path / 'd.json')])
    assert 'detector:' in proc.stdout and 'by part:' in proc.stdout
    data = json.loads((tmp_path / 'd.json').read_text())
    assert data['detector'] == 'MaskRCNN'
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
