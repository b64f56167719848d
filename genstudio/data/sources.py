"""Importing this module registers every built-in data source."""
from . import photos  # noqa: F401

try:  # the icon source needs the svg extra (cairosvg, svgelements)
    from . import icons  # noqa: F401
    from . import iconify  # noqa: F401
except ImportError:  # pragma: no cover - reported by `genstudio data list`
    pass
