"""The `npu` command line: the layer above every other package.

cli/main.py assembles the parser from one module per area (arch, sim, compile,
zoo, rtl, models, demo, bench); each module's ``add_commands(subparsers)``
adds its commands.  Nothing below imports from here.
"""
