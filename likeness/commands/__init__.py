"""Sub-commands of the `likeness` CLI; each module has `add_arguments(parser)` and `run(args) -> int`.

Modules import their heavy dependencies inside `run`, never at import time.
"""
