"""Whole-model inference speed of configs, interleaved in one run, with a per-part breakdown.

    python tools/analysis_tools/benchmark_models.py                       # every default table
    python tools/analysis_tools/benchmark_models.py --table mask_rcnn --reps 3
    python tools/analysis_tools/benchmark_models.py configs/mask_rcnn/shvit_s4.py \
        mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py --shape 800 1333 --variants eager fast fast-amp

Each model runs eager and through the fast inference path (``--variants``: ``fast`` = BatchNorm
folding + channels-last, ``fast-amp`` = the same in bf16 on capable CPUs / fp16 on CUDA,
``onnxruntime`` = exported through MMDeploy and run by ONNX Runtime).
Detectors are fixed at ``--detections`` boxes per image (score threshold 0), so that random
weights give a realistic load. Prints markdown (time per part: backbone, neck, dense heads, RoI
extraction, RoI heads, post-processing; parameters / FLOPs per part) and writes JSON. The logic
lives in :mod:`shvit_mm.benchmark.model_speed`.
"""
import argparse
import shlex
import sys

_R50 = {'mask_rcnn': 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py',
        'retinanet': 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py',
        'sem_fpn': 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'}
#: the default tables: name -> (configs, shape); the last config is the reference
TABLES = {
    'mask_rcnn': ([f'configs/mask_rcnn/shvit_s{i}.py' for i in (1, 2, 3, 4)] + [_R50['mask_rcnn']],
                  (800, 1333)),
    'retinanet': ([f'configs/retinanet/shvit_s{i}.py' for i in (1, 2, 3, 4)] + [_R50['retinanet']],
                  (800, 1333)),
    'deformable_detr': (['configs/deformable_detr/shvit_s4_single_head.py',
                         'configs/deformable_detr/r50_single_head.py',
                         'configs/deformable_detr/r50.py'], (800, 1333)),
    'sem_fpn': ([f'configs/sem_fpn/shvit_s{i}.py' for i in (1, 2, 3, 4)] + [_R50['sem_fpn']],
                (512, 512)),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('configs', nargs='*', help='configs (paths or mmdet::/mmseg:: names); default: '
                   'the tables named by --table')
    p.add_argument('--table', nargs='+', choices=sorted(TABLES), default=None,
                   help='default tables to run when no configs are given (default: all)')
    p.add_argument('--shape', nargs='+', type=int, default=None,
                   help='H W (or one size); default: each table\'s own (800x1333 / 512x512)')
    p.add_argument('--variants', nargs='+', default=['eager', 'fast', 'fast-amp'],
                   choices=['eager', 'fast', 'fast-amp', 'onnxruntime'],
                   help='onnxruntime: exported through MMDeploy, run by ONNX Runtime (CPU)')
    p.add_argument('--detections', type=int, default=100,
                   help='boxes per image a detector is fixed at (0: the config\'s own test_cfg)')
    p.add_argument('--reps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--threads', type=int, default=1, help='CPU threads (0: PyTorch default)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--reference', default=None, help='model the speed-up divides by (default: last)')
    p.add_argument('--no-flops', action='store_true')
    p.add_argument('--out', default='work_dirs/benchmark_models/model_speed.json')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from shvit_mm.benchmark.harness import write_json
    from shvit_mm.benchmark.model_speed import ModelSpeed
    command = 'python ' + ' '.join(shlex.quote(a) for a in [sys.argv[0]] + (
        argv if argv is not None else sys.argv[1:]))
    if args.configs:
        runs = {'models': (args.configs, tuple(args.shape or (800, 1333)))}
    else:
        runs = {name: TABLES[name] for name in (args.table or TABLES)}
    results = {}
    for name, (configs, shape) in runs.items():
        bench = ModelSpeed(configs=configs, shape=args.shape or shape, reps=args.reps,
                           warmup=args.warmup, threads=args.threads or None, device=args.device,
                           reference=args.reference, count_flops=not args.no_flops,
                           variants=args.variants, detections=args.detections or None,
                           progress=True)
        results[name] = bench.run(command)
        print(f'\n### {name}\n', flush=True)
        bench.report(results[name])
    print(f'JSON: {write_json(results, args.out)}')


if __name__ == '__main__':
    main()
