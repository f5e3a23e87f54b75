"""Runtime performance scaling with dynamic DNNs.

A slimmable family of sub-networks (widths that take the first channels of every layer) is trained with
shared weights (train.py), quantized so that every width's int8 weights are slices of the full width's
(family.py), compiled into one C image holding each weight once (image.py), measured on the emulated
cores as operating points (width x core x clock, board.py, points.py) and driven at run time by a
manager that picks the most accurate point meeting the current budgets (manager.py), replayed on budget
traces (trace.py).
"""
