"""One module per coordinate format; :mod:`selfpick.io.coords` is the interface to use.

Every module has ``NAME``, ``EXTENSION``, ``PER_MICROGRAPH``, ``read(path) -> table``,
``write(picks, path, *, box_size=None)`` and ``sniff(head_text) -> bool``. Readers return a pick
table (see :mod:`selfpick.io.formats._common`), possibly empty, and raise
:class:`selfpick.errors.InputError` for anything wrong with the file.
"""

from __future__ import annotations

from types import ModuleType

from selfpick.io.formats import (
    cryolo_cbox,
    cryoppp_csv,
    eman_box,
    json_dict,
    plain_csv,
    relion_star,
    topaz_text,
)

MODULES: dict[str, ModuleType] = {
    m.NAME: m
    for m in (json_dict, relion_star, cryoppp_csv, eman_box, cryolo_cbox, topaz_text, plain_csv)
}

__all__ = ["MODULES"]
