"""The whole-model speed benchmark times detectors and segmentors side by side."""
import os.path as osp

from conftest import REPO_ROOT


def test_model_speed_detector_and_segmentor_side_by_side(tmp_path):
    from shvit_mm.benchmark.model_speed import format_model_speed, run_model_speed, write_json
    configs = [osp.join(REPO_ROOT, 'configs/sem_fpn/shvit_s1.py'),
               osp.join(REPO_ROOT, 'configs/retinanet/shvit_s1.py')]
    result = run_model_speed(configs, (96, 128), reps=2, warmup=0, threads=1,
                             reference=configs[0])
    rows = {r['label']: r for r in result['rows']}
    assert set(rows) == {'sem_fpn/shvit_s1', 'retinanet/shvit_s1'}
    seg, det = rows['sem_fpn/shvit_s1'], rows['retinanet/shvit_s1']
    assert seg['codebase'] == 'mmseg' and det['codebase'] == 'mmdet'
    for r in (seg, det):
        assert len(r['times']['wall']['predict']) == 2
        parts = r['wall_parts']
        assert parts['total'] >= parts['backbone'] > 0
        assert abs(parts['backbone'] + parts['neck'] + parts['heads_post'] - parts['total']) < 1e-9 \
            or parts['neck'] == 0 or parts['heads_post'] == 0
        assert r['by_module']['backbone']['params'] > 0 and r['flops'] > 0
    assert seg['wall_speedup'] == 1.0  # the reference
    text = format_model_speed(result, 'cmd')
    assert 'sem_fpn/shvit_s1' in text and 'retinanet/shvit_s1' in text and 'GMACs' in text
    assert osp.isfile(write_json(result, str(tmp_path / 'r.json')))
