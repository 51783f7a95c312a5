"""Whole-model ONNX export through MMDeploy 1.3.1, and ONNX Runtime models for the exported files.

* :func:`export_onnx` (:mod:`.export`): a detector or segmentor to ``WORK_DIR/end2end.onnx``,
  pre-processed picture in; boxes, labels and 28x28 masks, or class logits, out; any batch size
  and picture size. ``tools/deploy.py`` is its command line.
* :func:`build_onnx_model` (:mod:`.models`): an ONNX Runtime model for that file, whose
  ``test_step`` / ``forward`` gives MMDetection's or MMSegmentation's data samples (boxes in the
  original picture, pasted masks, ``pred_sem_seg``), so MMEngine's Runner and the inferencers run
  it. MMDeploy's C++ runtime SDK is not used.
* :func:`register_rewriters` (:mod:`.rewriters`): what MMDeploy 1.3.1 lacks for PyTorch 2.14
  and these models, registered in MMDeploy's own rewriter registries, so that the graph computes
  what the PyTorch model does (the tests compare both at sizes other than the export size).

The deploy configs (``configs/_deploy_/``, chosen by task) are MMDeploy's ONNX Runtime dynamic
ones at opset 16 (below it ONNX's ``RoiAlign`` cannot express ``aligned=True``, which the export
then drops with only a warning) and, for detectors, a second graph input ``img_shape``.

Importing :mod:`shvit_mm` imports neither this package nor MMDeploy, and this package imports
MMDeploy only when a function runs (:class:`MMDeployNotInstalledError` says how to install it).
"""
from .export import DEPLOY_CONFIGS, default_deploy_config, export_onnx, torchscript_exporter
from .models import OnnxModelError, build_onnx_model, is_onnx_file
from .rewriters import INSTALL_HINT, MMDeployNotInstalledError, register_rewriters

__all__ = ['INSTALL_HINT', 'DEPLOY_CONFIGS', 'MMDeployNotInstalledError', 'register_rewriters',
           'torchscript_exporter', 'default_deploy_config', 'export_onnx', 'build_onnx_model',
           'is_onnx_file', 'OnnxModelError']
