"""The command lines behind ``tools/train.py`` and ``tools/test.py`` (MMDetection 3.3's, covering
MMSegmentation 1.2.2's): :mod:`shvit_mm.cli.train` and :mod:`shvit_mm.cli.test` each have
``parse_args``, ``build_config``, ``main`` and ``cli_main`` (user errors become an ``error:`` line
and exit status 1). :mod:`shvit_mm.cli.image_demo` is ``tools/image_demo.py`` (``parse_args``,
``main``, ``cli_main``)."""
from .common import DatasetNotFoundError, ToolError, check_datasets

__all__ = ['ToolError', 'DatasetNotFoundError', 'check_datasets']
