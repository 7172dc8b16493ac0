"""selfpick: cryo-EM particle picking with a U-Net and iterative self-training.

The package is a library first; ``selfpick <command>`` is a thin layer over it.
Coordinates everywhere are particle *centres* in pixels of the original micrograph,
``x`` = column and ``y`` = row of the array as read (origin at ``data[0, 0]``).
"""

__version__ = "0.6.0"
