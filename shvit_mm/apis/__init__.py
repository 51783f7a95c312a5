"""Entry points behind ``tools/train.py`` and ``tools/test.py`` (MMDetection 3.3 command lines).

``shvit_mm.apis.train.main(argv)`` and ``shvit_mm.apis.test.main(argv)`` do the work;
``cli_main`` wraps them for the command line (user errors become a message and exit status 1).
The sub-modules are imported on demand so that ``import shvit_mm`` stays light.
"""
