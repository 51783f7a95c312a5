"""Inference: the fast path for whole models (:mod:`.model`) and for a bare backbone
(:mod:`.backbone`), BatchNorm folding (:mod:`.fusion`), mixed precision shared with CPU AMP
training (:mod:`.precision`) and ONNX export (:mod:`.onnx`). Importing it registers
``FastInferenceHook`` in MMEngine's root ``HOOKS`` registry."""
from .backbone import BACKENDS, InferenceModel, optimize_for_inference
from .fusion import fold_batchnorm, fuse_for_deploy
from .model import FastInferenceHook, enable_fast_inference
from .onnx import OnnxRuntimeModel, export_onnx
from .precision import (DENSE_PARTS, autocast_forward, compare_outputs, flatten_outputs,
                        map_tensors, mixed_precision_dtype, resolve_dtype, submodules,
                        unwrap_model, wrap_forward)

__all__ = ['BACKENDS', 'InferenceModel', 'optimize_for_inference', 'fold_batchnorm',
           'fuse_for_deploy', 'FastInferenceHook', 'enable_fast_inference', 'OnnxRuntimeModel',
           'export_onnx', 'DENSE_PARTS', 'autocast_forward', 'compare_outputs', 'flatten_outputs',
           'map_tensors', 'mixed_precision_dtype', 'resolve_dtype', 'submodules', 'unwrap_model',
           'wrap_forward']
