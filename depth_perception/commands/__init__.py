"""Verbs of the ``depth-perception`` command line tool.

Each module here is one verb. It defines ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. Modules import their heavy dependencies inside ``run`` so that
``depth-perception --help`` stays fast and works without torch or ROS.
"""
