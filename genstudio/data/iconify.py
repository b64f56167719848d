"""More icons with words attached: the @iconify/json sets that shared/DATA.md allows for training.

`genstudio data prepare iconify` installs the npm package `@iconify/json` (~470 MB, one JSON file
per set) into a scratch folder and builds the sets listed in `ICONIFY_SETS` the way the `icons`
source builds its sets (normalised to 256x256 paths, vetted, deduplicated). Every other set in
that package is reserved for evaluation (DATA.md) and cannot be chosen here.

Iconify names carry the style in the name ("rocket-24-filled", "outline-rocket",
"rocket-bold-duotone"); `split_name` peels those tokens off into a label ("rocket") and a kind
("filled icon"), so the caption is "rocket, filled icon: <categories>" as for the other sets.
Sets that ship one icon in several pixel sizes (fluent) keep one size. Options: `sets=`,
`limit_per_set=`, `packages_dir=` (an existing node_modules tree), as for `icons`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from .icons import Icon, IconSet, _json, build_from_packages, iconify_svg, select_sets
from .registry import BuildLog, DataError, register_source

PACKAGE = "@iconify/json"

# prefix -> (licence of the artwork, what the drawings are)
ALLOWED: dict[str, tuple[str, str]] = {
    "carbon": ("Apache-2.0", "icon"), "fluent": ("MIT", "icon"), "material-symbols": ("Apache-2.0", "icon"),
    "ic": ("Apache-2.0", "icon"), "mingcute": ("Apache-2.0", "icon"), "solar": ("CC-BY-4.0", "icon"),
    "iconoir": ("MIT", "outline icon"), "uil": ("Apache-2.0", "icon"), "bx": ("MIT", "icon"),
    "ion": ("MIT", "icon"), "eva": ("MIT", "icon"), "akar-icons": ("MIT", "outline icon"),
    "radix-icons": ("MIT", "icon"), "teenyicons": ("MIT", "icon"), "majesticons": ("MIT", "icon"),
    "clarity": ("MIT", "icon"), "codicon": ("CC-BY-4.0", "icon"), "humbleicons": ("MIT", "outline icon"),
    "pixelarticons": ("MIT", "pixel icon"), "noto": ("Apache-2.0", "colour emoji"),
    "fluent-emoji-flat": ("MIT", "colour emoji"),
}

# How each set writes the style into its names: words before / after the label -> style ("" = none).
_F, _O, _D = "filled", "outline", "duotone"
_LEADING: dict[str, dict[str, str]] = {
    "ic": {"baseline": "", "outline": _O, "round": "", "sharp": "", "twotone": _D},
    "bx": {"bx": "", "bxs": _F, "bxl": ""}, "ion": {"ios": "", "md": ""},
}
_TRAILING: dict[str, dict[str, str]] = {
    "fluent": {"filled": _F, "regular": _O, "light": _O, "color": ""},
    "material-symbols": {"outline": _O, "rounded": "", "sharp": ""},
    "mingcute": {"fill": _F, "line": _O},
    "solar": {"bold": _F, "duotone": _D, "broken": _O, "line": _O, "linear": _O, "outline": _O},
    "iconoir": {"solid": _F}, "ion": {"outline": _O, "sharp": ""}, "eva": {"fill": _F, "outline": _O},
    "teenyicons": {"outline": _O, "solid": _F}, "majesticons": {"line": _O},
    "clarity": {"line": _O, "solid": _F, "outline": _O, "badged": "", "alerted": ""},
    "radix-icons": {"filled": _F}, "akar-icons": {"fill": _F},
}
_SIZES = {"10", "12", "16", "20", "24", "28", "32", "48"}
_FLUENT_SIZE = "24"  # fluent ships most icons at up to 8 sizes: keep this one
_TONES = ("-light-skin-tone", "-medium-light-skin-tone", "-medium-skin-tone", "-medium-dark-skin-tone",
          "-dark-skin-tone", "-light", "-medium-light", "-medium", "-medium-dark", "-dark")


def split_name(name: str, prefix: str) -> tuple[str, str, str]:
    """'rocket-24-filled' (fluent) -> ('rocket', 'filled', '24'): label words, style ('' = none), pixel size."""
    tokens = name.lower().split("-")
    style, size = "", ""
    leading, trailing = _LEADING.get(prefix, {}), _TRAILING.get(prefix, {})
    while len(tokens) > 1 and tokens[0] in leading:
        style = style or leading[tokens.pop(0)]
    while len(tokens) > 1 and (tokens[-1] in trailing or (prefix == "fluent" and tokens[-1] in _SIZES)):
        t = tokens.pop()
        if t in _SIZES:
            size = size or t
        else:
            style = trailing[t] or style
    return " ".join(tokens), style, size


def _variant_of_tone(name: str, names) -> bool:
    """An emoji in one skin tone whose default-tone base is in the set ('mermaid-dark' of 'mermaid')."""
    return any(name.endswith(t) and name[:-len(t)] in names for t in _TONES)


def _reader(prefix: str):
    def read(root: Path) -> Iterator[Icon]:
        data = _json(root / "json" / f"{prefix}.json")
        if not data:
            raise DataError(f"{PACKAGE} has no json/{prefix}.json")
        tags: dict[str, list[str]] = {}
        for category, names in (data.get("categories") or {}).items():
            for n in names:
                tags.setdefault(n, []).append(category)
        kind = ALLOWED[prefix][1]
        icons = data.get("icons", {})
        for name in sorted(icons):
            label, style, size = split_name(name, prefix)
            if (prefix == "fluent" and size != _FLUENT_SIZE) or ("emoji" in kind and _variant_of_tone(name, icons)):
                continue
            svg = iconify_svg(data, name)
            extra = {"label": label, "kind": f"{style} {kind}" if style and "emoji" not in kind else kind}
            if style:
                extra["style"] = style
            yield name, svg, tags.get(name, []), extra
    return read


ICONIFY_SETS: dict[str, IconSet] = {p: IconSet(PACKAGE, lic, kind, _reader(p)) for p, (lic, kind) in ALLOWED.items()}


@register_source("iconify", "More captioned icons from @iconify/json (only the sets shared/DATA.md allows for "
                 "training: carbon, fluent, material-symbols, ic, mingcute, solar, ...), normalised to 256x256",
                 licence="per item (MIT, Apache-2.0, CC-BY-4.0)", requires=("npm",))
def build_iconify(out: Path, log: BuildLog, sets=None, limit_per_set: int | None = None,
                  packages_dir: str | Path | None = None, size: int = 256, precision: int = 1,
                  check_size: int = 32) -> Iterator[dict]:
    chosen = select_sets(sets, ICONIFY_SETS, "iconify set(s) {} are not allowed for training (shared/DATA.md "
                                            "reserves them for evaluation)")
    yield from build_from_packages(out, log, {s: ICONIFY_SETS[s] for s in chosen}, packages_dir, size, precision,
                                   check_size, limit_per_set)
