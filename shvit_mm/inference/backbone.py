"""Fast inference for a bare backbone (SHViT or any ``nn.Module`` taking one image batch).

The paper times SHViT after folding every BatchNorm into its convolution
(``SHViT.switch_to_deploy``). :func:`optimize_for_inference` applies that and, on request:

* **channels-last** memory format: oneDNN runs every 1x1 convolution as one GEMM and the
  depthwise convolutions vectorise over channels;
* **graph compilation** (``torch.compile`` with Inductor's freezing, or TorchScript trace +
  freeze): each convolution is fused with the ReLU or residual add after it and its weights are
  pre-packed once;
* **bfloat16** weights and activations on CPUs with AVX-512 BF16 or AMX
  (:func:`shvit_mm.utils.cpu.cpu_bf16_support`);
* **ONNX Runtime** (:mod:`shvit_mm.inference.onnx`) instead of PyTorch.

Example::

    fast = optimize_for_inference(SHViT(arch='s4'), torch.randn(1, 3, 512, 512), dtype='bf16',
                                  backend='compile')
    feats = fast(images)   # tuple of fp32 NCHW tensors, as the eager backbone returns
"""
from __future__ import annotations

import copy as copy_module
import os
import tempfile
import warnings
from typing import Any, Optional, Union

import torch
import torch.nn as nn

from shvit_mm.utils.cpu import cpu_bf16_support
from .fusion import fuse_for_deploy
from .onnx import OnnxRuntimeModel, export_onnx
from .precision import map_tensors, resolve_dtype

__all__ = ['BACKENDS', 'InferenceModel', 'optimize_for_inference']

#: Graph backends accepted by :func:`optimize_for_inference`.
BACKENDS = ('eager', 'compile', 'jit', 'onnxruntime')


class InferenceModel(nn.Module):
    """An inference-only wrapper made by :func:`optimize_for_inference`.

    It converts the input to the model's memory format and dtype, runs the (possibly compiled)
    model under ``torch.inference_mode()`` and returns contiguous outputs in ``output_dtype``
    (fp32 by default): a drop-in replacement for the eager backbone at inference.
    """

    def __init__(self, module: nn.Module, *, channels_last: bool, dtype: Optional[torch.dtype],
                 backend: str, output_dtype: Optional[torch.dtype], source: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.channels_last = channels_last
        self.dtype = dtype
        self.backend = backend
        self.output_dtype = output_dtype
        self._source = [source]  # the fused eager model; in a list so it is not a sub-module

    @property
    def source(self) -> nn.Module:
        return self._source[0]

    def train(self, mode: bool = True) -> 'InferenceModel':
        if mode:
            raise RuntimeError('InferenceModel is for inference only; keep the original model to train')
        return super().train(False)

    def extra_repr(self) -> str:
        return (f'backend={self.backend}, channels_last={self.channels_last}, '
                f'dtype={self.dtype}, output_dtype={self.output_dtype}')

    def _output(self, t: torch.Tensor) -> torch.Tensor:
        if self.output_dtype is not None and t.is_floating_point():
            t = t.to(self.output_dtype)
        return t.contiguous()

    def forward(self, x: torch.Tensor) -> Any:
        with torch.inference_mode():
            if self.dtype is not None:
                x = x.to(self.dtype)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            if self.backend == 'compile':
                # Inductor reads ``freezing`` when it compiles, i.e. inside the first call for each
                # new input shape; ``torch.compile(options=...)`` does not carry it there.
                import torch._inductor.config as inductor_config
                with inductor_config.patch(freezing=True):
                    out = self.module(x)
            else:
                out = self.module(x)
            return map_tensors(out, self._output)


@torch.no_grad()
def optimize_for_inference(model: nn.Module,
                           example_input: Optional[torch.Tensor] = None,
                           *,
                           fuse: bool = True,
                           channels_last: bool = True,
                           dtype: Union[None, str, torch.dtype] = None,
                           backend: str = 'eager',
                           output_dtype: Union[None, str, torch.dtype] = 'fp32',
                           dynamic: Optional[bool] = False,
                           onnx_path: Optional[str] = None,
                           threads: Optional[int] = None,
                           copy: bool = False) -> InferenceModel:
    """Prepare a backbone for fast inference.

    Args:
        model: the module (e.g. an :class:`~shvit_mm.models.SHViT`); it is modified in place
            (eval mode, fused, converted) unless ``copy=True``.
        example_input: a batch like the ones the model will see; required by ``backend='jit'``
            and ``'onnxruntime'`` (tracing) and used by ``'compile'`` to compile ahead of the
            first real call.
        fuse: call ``switch_to_deploy()`` (BatchNorm folding) first.
        channels_last: convert weights (and, at each call, the input) to channels-last.
        dtype: ``None``/``'fp32'``, ``'bf16'`` or ``'fp16'``: cast weights and input. On a CPU
            without AVX-512 BF16 or AMX, bf16 is emulated and slower than fp32 (a warning says so).
        backend: one of :data:`BACKENDS`: ``'eager'``; ``'compile'`` (``torch.compile``, Inductor
            with freezing); ``'jit'`` (``torch.jit.trace`` + ``freeze`` +
            ``optimize_for_inference``); ``'onnxruntime'`` (fp32 ONNX export with dynamic batch and
            size, run by ONNX Runtime's CPU provider; ``channels_last`` and ``dtype`` do not apply).
        output_dtype: dtype of the returned features (default fp32, what necks and heads expect);
            None keeps the compute dtype.
        dynamic: passed to ``torch.compile``. False (default) specialises the graph to each input
            shape (a new shape recompiles); None/True suit inputs whose size varies.
        onnx_path: where ``'onnxruntime'`` writes the ONNX file (default: a temporary file that
            lives as long as the returned model).
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()``).
        copy: work on a deep copy and leave ``model`` untouched.
    """
    if backend not in BACKENDS:
        raise ValueError(f'Unknown backend {backend!r}; choose one of {BACKENDS}')
    if backend in ('jit', 'onnxruntime') and example_input is None:
        raise ValueError(f"backend='{backend}' traces the model: pass example_input (a batch of "
                         'the input size you will run)')
    dtype, output_dtype = resolve_dtype(dtype), resolve_dtype(output_dtype)
    if backend == 'onnxruntime':
        if dtype not in (None, torch.float32):
            raise ValueError("backend='onnxruntime' runs the fp32 export; use dtype=None (or "
                             "backend='compile' for bf16)")
        channels_last = False
    if copy:
        model = copy_module.deepcopy(model)
    model.eval()
    if fuse:
        fuse_for_deploy(model)
    device = next((p.device for p in model.parameters()), torch.device('cpu'))
    if dtype == torch.bfloat16 and device.type == 'cpu' and not cpu_bf16_support()['fast']:
        warnings.warn('This CPU has neither AVX-512 BF16 nor AMX: bf16 is emulated and will be '
                      'slower than fp32; use dtype=None here.')
    if dtype is not None:
        model.to(dtype)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)

    runner: nn.Module = model
    if backend == 'onnxruntime':
        tmp = None
        if onnx_path is None:
            tmp = tempfile.TemporaryDirectory(prefix='shvit_onnx_')
            onnx_path = os.path.join(tmp.name, 'model.onnx')
        export_onnx(model.float(), onnx_path, example_input[:1].cpu(), dynamic=True, fuse=False)
        runner = OnnxRuntimeModel(onnx_path, threads=threads or torch.get_num_threads())
        runner._tmpdir = tmp  # removed with the runner
    elif backend == 'jit':
        example = example_input.to(device, dtype or example_input.dtype)
        if channels_last:
            example = example.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(False), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # TorchScript's deprecation notice
            traced = torch.jit.trace(model, example, check_trace=False, strict=False)
            runner = torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
    elif backend == 'compile':
        # Freezing (switched on around each call by InferenceModel.forward) needs grad mode off at
        # call time, which InferenceModel guarantees.
        runner = torch.compile(model, dynamic=dynamic)

    wrapped = InferenceModel(runner, channels_last=channels_last, dtype=dtype, backend=backend,
                             output_dtype=output_dtype, source=model)
    if backend in ('compile', 'jit') and example_input is not None:
        wrapped(example_input.to(device))  # compile / specialise now rather than on the first call
    return wrapped
