"""The inference API, as ``apis`` is in OpenMMLab: read a config, build its model, and get the
codebase's inferencer for it (``DetInferencer`` or ``MMSegInferencer``)."""
from .config import (CODEBASES, ConfigError, build_model, codebase_of, read_config,
                     setup_registries, strip_pretrained)
from .inference import build_inferencer

__all__ = ['CODEBASES', 'ConfigError', 'read_config', 'codebase_of', 'setup_registries',
           'strip_pretrained', 'build_model', 'build_inferencer']
