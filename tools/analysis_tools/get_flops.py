#!/usr/bin/env python
"""FLOPs (multiply-adds) and parameters of a backbone or a whole model config, without a dataset.

    python tools/analysis_tools/get_flops.py shvit_s4 --shape 512
    python tools/analysis_tools/get_flops.py configs/mask_rcnn/shvit_s1.py --shape 800 1333

A backbone name is one the latency benchmark knows (shvit_s1..s4, resnet50, efficientnet_b0,
mobilenet_v3_large, efficientformer_l1, poolformer_s12, timm_shvit_s4); anything ending in ``.py``
(``mmdet::``/``mmseg::`` names too) is a config, whose model is built as the other tools build it
(:func:`shvit_mm.apis.config.build_model`, no pretrained download). Counting uses MMEngine's
analyzers (those behind its ``get_model_complexity_info``); the logic lives in
:mod:`shvit_mm.benchmark.complexity`.
"""
import argparse
import sys

from mmengine.config import DictAction


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('target', help='backbone name or config file')
    p.add_argument('--shape', nargs='+', type=int, default=None,
                   help='input size: one value (square) or H W (default 512 for a backbone, '
                        '800 1333 for a config)')
    p.add_argument('--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
                   help='override config entries, e.g. model.backbone.arch=s1')
    p.add_argument('--no-deploy', action='store_true',
                   help='count a backbone with its BatchNorms unfused (default: fused, as deployed)')
    p.add_argument('--deploy', action='store_true',
                   help='fuse a config\'s model (BatchNorms into convs) before counting')
    p.add_argument('--table', action='store_true', help='print the per-module table too')
    p.add_argument('--json', default=None, help='also write the result to this JSON file')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from shvit_mm.benchmark.complexity import complexity, format_complexity
    from shvit_mm.benchmark.harness import write_json
    deploy = False if args.no_deploy else (True if args.deploy else None)
    info = complexity(args.target, args.shape, cfg_options=args.cfg_options, deploy=deploy,
                      show_table=args.table)
    print(format_complexity(info))
    if args.json:
        write_json({k: v for k, v in info.items() if k != 'table'}, args.json)
    return 0


if __name__ == '__main__':
    sys.exit(main())
