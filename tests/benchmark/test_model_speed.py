"""The whole-model speed benchmark times detectors and segmentors side by side, eager and through
the fast inference path, with a per-part breakdown."""
import os.path as osp

import pytest

from conftest import REPO_ROOT


def test_model_speed_detector_and_segmentor_side_by_side(tmp_path):
    from shvit_mm.benchmark.harness import write_json
    from shvit_mm.benchmark.model_speed import ModelSpeed
    configs = [osp.join(REPO_ROOT, 'configs/sem_fpn/shvit_s1.py'),
               osp.join(REPO_ROOT, 'configs/mask_rcnn/shvit_s1.py')]
    result = ModelSpeed(configs=configs, shape=(96, 128), reps=2, warmup=0, threads=1,
                        reference=configs[0], variants=('eager', 'fast'), detections=7).run()
    rows = {r['label']: r for r in result['rows']}
    assert set(rows) == {'sem_fpn/shvit_s1', 'sem_fpn/shvit_s1 [fast]', 'mask_rcnn/shvit_s1',
                         'mask_rcnn/shvit_s1 [fast]'}
    seg, det = rows['sem_fpn/shvit_s1'], rows['mask_rcnn/shvit_s1']
    assert seg['codebase'] == 'mmseg' and det['codebase'] == 'mmdet'
    assert set(det['parts_present']) == {'backbone', 'neck', 'dense_heads', 'roi_extract',
                                         'roi_heads'}
    assert set(seg['parts_present']) == {'backbone', 'neck', 'dense_heads'}
    for r in rows.values():
        assert len(r['times']) == 2
        m = r['median']
        for part in r['parts_present']:
            assert m[part] > 0, (r['label'], part)
        assert m['total'] >= m['backbone'] + m['neck']
        assert r['by_module']['backbone']['params'] > 0 and r['flops'] > 0
    assert rows['mask_rcnn/shvit_s1 [fast]']['fast']['channels_last']
    assert seg['speedup_vs_reference'] == 1.0 and det['speedup_vs_eager'] == 1.0
    text = ModelSpeed.markdown(result)
    assert 'mask_rcnn/shvit_s1 [fast]' in text and 'GMACs' in text and 'RoI heads' in text
    assert osp.isfile(write_json(result, str(tmp_path / 'r.json')))


def test_fixed_detection_count_sets_score_threshold_and_cap():
    from shvit_mm.apis.config import read_config
    from shvit_mm.benchmark.model_speed import fix_detection_count
    two = read_config(osp.join(REPO_ROOT, 'configs/mask_rcnn/shvit_s1.py'))
    fix_detection_count(two, 42)
    assert two.model.test_cfg.rcnn.score_thr == 0 and two.model.test_cfg.rcnn.max_per_img == 42
    one = read_config(osp.join(REPO_ROOT, 'configs/retinanet/shvit_s1.py'))
    fix_detection_count(one, 42)
    assert one.model.test_cfg.score_thr == 0 and one.model.test_cfg.max_per_img == 42


def test_unknown_variant_is_refused():
    from shvit_mm.benchmark.model_speed import ModelSpeed
    with pytest.raises(ValueError, match='unknown variants'):
        ModelSpeed(configs=['x.py'], variants=('turbo', ))


def test_onnxruntime_variant_times_the_exported_graph_beside_eager():
    from shvit_mm.benchmark.model_speed import ModelSpeed
    config = osp.join(REPO_ROOT, 'configs/retinanet/shvit_s1.py')
    result = ModelSpeed(configs=[config], shape=(96, 128), reps=1, warmup=0, threads=1,
                        variants=('eager', 'onnxruntime'), detections=7,
                        count_flops=False).run()
    rows = {r['label']: r for r in result['rows']}
    eager, onnx = rows['retinanet/shvit_s1'], rows['retinanet/shvit_s1 [onnxruntime]']
    assert onnx['parts_present'] == ['onnx_graph'] and onnx['model'].startswith('DetectionOnnx')
    assert 'onnx_graph' not in eager['parts_present']
    assert 0 < onnx['median']['onnx_graph'] < onnx['median']['total']
    assert onnx['speedup_vs_eager'] == eager['median']['total'] / onnx['median']['total']
    assert '| ONNX graph |' in ModelSpeed.markdown(result)


def test_onnxruntime_variant_is_cpu_only():
    from shvit_mm.benchmark.model_speed import ModelSpeed
    with pytest.raises(ValueError, match='runs on the CPU'):
        ModelSpeed(configs=['x.py'], variants=('onnxruntime', ), device='cuda')
