"""ONNX export of a backbone and an ONNX Runtime runner for the exported file."""
from __future__ import annotations

import os
import warnings
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from .fusion import fuse_for_deploy
from .precision import flatten_outputs

__all__ = ['export_onnx', 'OnnxRuntimeModel']


@torch.no_grad()
def export_onnx(model: nn.Module, path: str, example_input: torch.Tensor, *,
                opset: int = 17, dynamic: bool = True, fuse: bool = True) -> Dict[str, Any]:
    """Export a backbone to ONNX (inputs ``input``, outputs ``out0``, ``out1``, ...).

    Uses PyTorch's TorchScript-based exporter (``dynamo=False``), which needs nothing beyond
    ``onnx``; the dynamo exporter would need ``onnxscript``. With ``dynamic=True`` the batch size,
    height and width are free in the graph. ``fuse`` folds BN first (:func:`fuse_for_deploy`).
    Returns a dict with the path, opset and output names.
    """
    try:
        import onnx
    except ImportError as e:
        raise ImportError('ONNX export needs the onnx package: pip install onnx onnxruntime') from e
    model.eval()
    if fuse:
        fuse_for_deploy(model)
    example_input = example_input.float().contiguous()
    output_names = [f'out{i}' for i in range(len(flatten_outputs(model(example_input))))]
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {n: {0: 'batch', 2: f'{n}_height', 3: f'{n}_width'} for n in output_names}
        dynamic_axes['input'] = {0: 'batch', 2: 'height', 3: 'width'}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # deprecation notice of the TorchScript exporter
        torch.onnx.export(model, (example_input,), path, input_names=['input'],
                          output_names=output_names, dynamic_axes=dynamic_axes,
                          opset_version=opset, dynamo=False)
    onnx.checker.check_model(onnx.load(path))
    return dict(path=path, opset=opset, outputs=output_names)


class OnnxRuntimeModel(nn.Module):
    """Run an exported model with ONNX Runtime's CPU provider; call it with a torch tensor.

    Returns a tuple of torch tensors (what the PyTorch backbone returns). It holds no parameters.
    """

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        super().__init__()
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError('ONNX Runtime is not installed: pip install onnxruntime') from e
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, sess_options=opts,
                                            providers=['CPUExecutionProvider'])
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        arr = x.detach().to('cpu', torch.float32).contiguous().numpy()
        return tuple(torch.from_numpy(o) for o in self.session.run(None, {self.input_name: arr}))
