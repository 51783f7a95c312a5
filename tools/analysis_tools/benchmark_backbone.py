#!/usr/bin/env python
"""Backbone latency at 512x512 (the SHViT paper's protocol), every model interleaved.

    python tools/analysis_tools/benchmark_backbone.py     # paper preset, CPU, 1 thread, batch 16
    python tools/analysis_tools/benchmark_backbone.py --models shvit_s4:deploy resnet50 --reps 5
    python tools/analysis_tools/benchmark_backbone.py --device cuda   # batch 32, synchronised

Prints progress on stderr and a markdown table on stdout; writes ``latency.json``,
``latency.md`` and ``latency_vs_size.png`` under ``--out-dir``. Entries are ``ARCH:MODE``
(see ``--list``). The logic lives in :mod:`shvit_mm.benchmark.latency`; this script holds what
the results are compared with: the paper's figures and the ratios the project tracks.
"""
import argparse
import os
import shlex
import sys

#: SHViT paper (Yun & Ro, CVPR 2024, arXiv:2401.16456), Table 5: backbone milliseconds per image
#: on an Intel CPU (batch 16, 512x512), for the "paper CPU speed-up" column. The same table's A100
#: figures (batch 32) are quoted in docs/benchmarks/latency.md.
PAPER_CPU_MS = {'shvit_s4': 5.0, 'resnet50': 19.0, 'efficientnet_b0': 16.7,
                'mobilenet_v3_large': 7.5, 'efficientformer_l1': 21.0, 'poolformer_s12': 40.4}

#: The comparisons listed under the table (``compare_entries``): (label, slower, faster) is a
#: latency ratio, (label, entry) the entry against its fp32 roofline; unmeasured ones are left out.
_S4_FP32 = ('deploy', 'cl', 'compile', 'jit', 'onnx')
TARGETS = ([(f'ResNet-50 (eager) / SHViT-S4 ({m})', 'resnet50:eager', f'shvit_s4:{m}')
            for m in _S4_FP32]
           + [('ResNet-50 (compile) / SHViT-S4 (compile)', 'resnet50:compile', 'shvit_s4:compile')]
           + [(f'SHViT-S4 ({m})', f'shvit_s4:{m}') for m in _S4_FP32]
           + [(f'SHViT-S4 bf16 (compile) faster than fp32 ({m})', f'shvit_s4:{m}', 'shvit_s4:bf16')
              for m in ('compile', 'onnx', 'cl', 'deploy')])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=['paper'],
                   help='ARCH[:MODE] entries or presets (default: paper). See --list.')
    p.add_argument('--sizes', nargs='+', type=int, default=[512], help='square input sizes of the table')
    p.add_argument('--batch', type=int, default=None, help='batch size (default 16 on CPU, 32 on CUDA)')
    p.add_argument('--device', default='cpu', help="'cpu' or 'cuda[:N]'")
    p.add_argument('--threads', type=int, default=1,
                   help='CPU threads (paper: 1; 0 keeps PyTorch default)')
    p.add_argument('--warmup', type=int, default=3, help='untimed rounds before timing')
    p.add_argument('--reps', type=int, default=10, help='timed rounds (one batch per model per round)')
    p.add_argument('--plot-models', nargs='+', default=['plot'],
                   help='entries timed across --plot-sizes for the latency-vs-size figure')
    p.add_argument('--plot-sizes', nargs='*', type=int, default=[256, 384, 512, 640, 768, 1024],
                   help='sizes of the sweep (empty: no sweep; the plot then uses the table sizes)')
    p.add_argument('--plot-batch', type=int, default=4,
                   help='batch of the sweep (default 4: a 1024px batch of 16 takes long; 0: --batch)')
    p.add_argument('--plot-reps', type=int, default=3, help='timed rounds of the sweep (0: --reps)')
    p.add_argument('--plot-warmup', type=int, default=1, help='untimed rounds of the sweep')
    p.add_argument('--reference', default='resnet50:eager', help='entry the speed-up column divides by')
    p.add_argument('--no-accuracy', action='store_true', help='skip the fp32-vs-mode output comparison')
    p.add_argument('--no-peak', action='store_true', help='do not time GEMMs for the machine peak')
    p.add_argument('--no-flops', action='store_true', help='do not count FLOPs (no GFLOP/s column)')
    p.add_argument('--out-dir', default='work_dirs/benchmark', help='where JSON, markdown and PNG go')
    p.add_argument('--quiet', action='store_true', help='no progress lines')
    p.add_argument('--list', action='store_true', help='list backbones, modes and presets, then exit')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from shvit_mm.benchmark.latency import LatencyBenchmark, compare_entries, plot_latency_vs_size
    from shvit_mm.benchmark.zoo import describe, parse_entries
    if args.list:
        print(describe())
        return 0
    bench = LatencyBenchmark(
        entries=parse_entries(args.models), sizes=args.sizes, batch=args.batch, device=args.device,
        threads=args.threads or None, warmup=args.warmup, reps=args.reps,
        plot_entries=parse_entries(args.plot_models) if args.plot_sizes else [],
        plot_sizes=args.plot_sizes or [], plot_batch=args.plot_batch or None,
        plot_reps=args.plot_reps or None, plot_warmup=args.plot_warmup,
        reference=args.reference or None, check_accuracy=not args.no_accuracy,
        peak=not args.no_peak, flops=not args.no_flops, progress=not args.quiet)
    command = 'python ' + ' '.join(shlex.quote(a) for a in [sys.argv[0]] + (argv if argv is not None
                                                                             else sys.argv[1:]))
    result = bench.run(command)
    result['plot'] = plot_latency_vs_size(result, os.path.join(args.out_dir, 'latency_vs_size.png'))
    result['targets'] = compare_entries(result, TARGETS)
    bench.report(result, os.path.join(args.out_dir, 'latency.json'),
                 os.path.join(args.out_dir, 'latency.md'), paper_cpu_ms=PAPER_CPU_MS,
                 comparisons=TARGETS)
    print(f'plot: {result["plot"] or "(nothing measured at two or more sizes)"}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
