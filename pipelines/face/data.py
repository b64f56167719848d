"""Avatar faces with identities for Vec2Face: the DiceBear "big-ears" style, rendered offline.

    genstudio data prepare faces                 # 2,000 identities x 12 variations, 64x64 (see below)
    ds = FaceDataset("train")                    # {"image": (3,64,64) in [-1,1], "identity": int, ...}
    pairs = identity_pairs("test", 2000, seed=0) # (i, j, same) triples for verification

No face-photo dataset ships in any package here, so faces come from a controllable avatar
generator: `npm install @dicebear/core @dicebear/big-ears` into a scratch folder, a node script
writes one SVG per (identity, variation) from options chosen here, cairosvg renders them.

IDENTITY vs VARIATION. An identity is the set of parts that make a face and that a person keeps:
face shape (`face`, 10), ears (`ear`, 8), nose (`nose`, 12), eye shape (`eyes`, the 19 neutral
variants), skin tone (`skinColor`, the style's 5 tones plus their 4 midpoints) and cheek marks
(`cheek`, 6 or none: blush / freckles). Identities are drawn in order and each one differs from
every earlier one in at least two of these six parts (no twins). A variation of an identity is
what a person changes: expression (`mouth`, 38; and with probability 1/4 an expressive eye state
instead of the identity's eyes: closed, winking, stars, angry...), hair (`hair`, 40 cuts; `frontHair`,
12; `sideburn`, 7; `hairColor`, 10) and background colour. Pose, scale and light are not drawn by
the style: `FaceDataset` applies them as training-time augmentation (rotation, scale, translation,
brightness, contrast, a light gradient).

WHY BIG-EARS (the styles of @dicebear/collection 9.4.3 were compared, each LICENSE read):
- big-ears (design CC BY 4.0, "Face Generator" by The Visual Team; code MIT): the most identity
  parts of any style, all separate options (face, ear, nose, eyes, skin, cheek), colour, and parts
  large enough to survive 64x64. Its eye set mixes neutral shapes with expression states, which
  is why eyes are split into the two lists below.
- lorelei / notionists / open-peeps (CC0 1.0): black-and-white line art; lorelei's head shape
  barely changes, notionists has no face shape or skin option (1 base), so identities at 64 px
  would rest mostly on eyes and nose.
- avataaars ("free for personal and commercial use", avataaars.com): one nose, eyes and eyebrows
  are all expressions; only skin tone would be left as identity.
- micah, personas, adventurer (CC BY 4.0): few identity parts (3 noses, eyes that are
  expressions, or no nose at all).
Only CC BY 4.0 obliges us to something: credit "Face Generator by The Visual Team
(https://thevisual.team/), CC BY 4.0, via DiceBear" in every model card trained on this data
(each manifest item carries `licence` and `attribution`).

NO FLIPS by default: several of the style's noses point sideways and the nose is part of the
identity, so a mirrored face is a face the style never draws for that person (`flip=True` exists).

STORAGE: one uint8 array per split, `images/{split}.npy` of shape (N, size, size, 3), read through a
memory map. 24k images of 64x64 are 295 MB raw (PNGs would be ~5x smaller), but a 2-core machine
then spends no time decoding during training and a batch is one fancy-index; the SVG itself is not
kept: the manifest holds every option, so `avatar_options(item)` + DiceBear re-draws it at any size.

SPLIT by identity: `split_of("faces:" + identity, val=0.1, test=0.1)`, so every image of a held-out
identity is held out (10 % val, 10 % test: ~200 test identities for the verification benchmark).
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np

from genstudio.data.npm import npm_install
from genstudio.data.registry import BuildLog, DataError, SPLITS, dataset_dir, load_manifest, register_source, split_of

NAME = "faces"
STYLE = "big-ears"
STYLE_PACKAGE = "@dicebear/big-ears"
VERSION = "9.4.3"  # pinned: DiceBear's option -> drawing map may change between releases
LICENCE = "CC-BY-4.0 (design: Face Generator by The Visual Team); MIT (DiceBear code)"
ATTRIBUTION = ("Face Generator by The Visual Team (https://thevisual.team/), CC BY 4.0 "
               "(https://creativecommons.org/licenses/by/4.0/), via DiceBear (https://www.dicebear.com/)")
VAL_FRACTION = TEST_FRACTION = 0.1
IDENTITY_PARTS = ("face", "ear", "nose", "eyes", "skinColor", "cheek")
# Eye variants that are an expression state rather than a shape (checked on a rendered sheet of all 32).
EXPRESSIVE_EYES = ("variant01", "variant02", "variant10", "variant11", "variant12", "variant13", "variant16",
                   "variant17", "variant18", "variant25", "variant30", "variant31", "variant32")
EXPRESSIVE_EYES_PROBABILITY = 0.25
BACKGROUNDS = ("b6e3f4", "c0aede", "d1d4f9", "ffd5dc", "ffdfbf", "c1f0c1", "f4f1bb", "e6e6e6")

# Reads jobs (one JSON object per line: key + DiceBear options) and writes one SVG per line.
NODE_SCRIPT = r"""
import { createAvatar } from '@dicebear/core';
import * as style from '@dicebear/big-ears';
import fs from 'fs';
import readline from 'readline';
const [mode, input, output] = process.argv.slice(2);
if (mode === 'schema') {
  fs.writeFileSync(output, JSON.stringify({ meta: style.meta, properties: style.schema.properties }));
} else {
  const out = fs.createWriteStream(output);
  const lines = readline.createInterface({ input: fs.createReadStream(input), crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const job = JSON.parse(line);
    const svg = createAvatar(style, job.options).toString();
    if (!out.write(JSON.stringify({ key: job.key, svg }) + '\n')) await new Promise(r => out.once('drain', r));
  }
  await new Promise(r => out.end(r));
}
"""


# ---- Node side: install, schema, SVGs ----

def _check_node() -> None:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        raise DataError(f"building {NAME!r} needs Node.js and npm to draw the DiceBear avatars, but "
                        f"{' and '.join(missing)} is not on PATH (apt-get install -y nodejs npm)")


def _node(scratch: Path, *args: str) -> None:
    cmd = ["node", str(scratch / "avatars.mjs"), *args]
    r = subprocess.run(cmd, cwd=scratch, capture_output=True, text=True)
    if r.returncode != 0:
        raise DataError(f"`{' '.join(cmd)}` failed (exit {r.returncode}): {r.stderr.strip()[-800:]}")


def _install_style(scratch: Path, log: BuildLog, version: str, packages_dir=None) -> dict:
    """npm install (or link an existing node_modules), write the node script; return the style's
    schema properties, meta and installed version."""
    if packages_dir is not None:
        scratch.mkdir(parents=True, exist_ok=True)
        (scratch / "package.json").write_text('{"name": "genstudio-faces-scratch", "private": true, "type": "module"}')
        nm = Path(packages_dir)
        nm = nm / "node_modules" if (nm / "node_modules").is_dir() else nm
        if not (nm / STYLE_PACKAGE).is_dir():
            raise DataError(f"packages_dir={packages_dir!s} has no {STYLE_PACKAGE}")
        (scratch / "node_modules").symlink_to(nm.resolve(), target_is_directory=True)
    else:
        npm_install(scratch, [f"@dicebear/core@{version}", f"{STYLE_PACKAGE}@{version}"], log,
                    name="genstudio-faces-scratch", module=True)
    (scratch / "avatars.mjs").write_text(NODE_SCRIPT)
    _node(scratch, "schema", "-", str(scratch / "schema.json"))
    schema = json.loads((scratch / "schema.json").read_text())
    pkg = json.loads((scratch / "node_modules" / STYLE_PACKAGE / "package.json").read_text())
    schema["version"] = pkg.get("version", "unknown")
    log(f"{STYLE_PACKAGE} {schema['version']}: {schema['meta'].get('title')} by {schema['meta'].get('creator')}, "
        f"{schema['meta'].get('license', {}).get('name')}")
    return schema


def _draw_svgs(scratch: Path, jobs: list[dict]) -> Iterator[tuple[str, str]]:
    """(key, svg) for each job {"key", "options"}, in order."""
    (scratch / "jobs.jsonl").write_text("".join(json.dumps(j) + "\n" for j in jobs))
    _node(scratch, "svgs", str(scratch / "jobs.jsonl"), str(scratch / "svgs.jsonl"))
    with open(scratch / "svgs.jsonl") as f:
        for line in f:
            row = json.loads(line)
            yield row["key"], row["svg"]


# ---- Options: identities and variations ----

def _enum(schema: dict, part: str) -> list[str]:
    prop = schema["properties"].get(part)
    if not prop or "enum" not in prop.get("items", {}):
        raise DataError(f"{STYLE_PACKAGE} {schema.get('version')} has no option {part!r}; this builder "
                        f"knows version {VERSION} (pass version={VERSION!r})")
    return sorted(prop["items"]["enum"])


def _skin_tones(schema: dict) -> list[str]:
    """The style's skin tones plus the midpoint of each neighbouring pair (light to dark)."""
    base = [c.lower() for c in schema["properties"]["skinColor"]["default"]]
    rgb = [np.array([int(c[i:i + 2], 16) for i in (0, 2, 4)]) for c in base]
    tones = []
    for k, c in enumerate(rgb):
        tones.append(base[k])
        if k + 1 < len(rgb):
            tones.append("".join(f"{int(v):02x}" for v in np.round((c + rgb[k + 1]) / 2)))
    return tones


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha1(":".join(map(str, key)).encode()).digest()[:8], "big"))


def identity_choices(schema: dict) -> dict[str, list[str]]:
    eyes = [e for e in _enum(schema, "eyes") if e not in EXPRESSIVE_EYES]
    return {"face": _enum(schema, "face"), "ear": _enum(schema, "ear"), "nose": _enum(schema, "nose"),
            "eyes": eyes, "skinColor": _skin_tones(schema), "cheek": _enum(schema, "cheek") + ["none"]}


def sample_identities(schema: dict, n: int, min_parts_apart: int = 2) -> list[dict]:
    """n identities (part -> value); identity k depends only on k and the identities before it, so a
    smaller build is a prefix of a larger one. Each differs from every earlier one in at least
    `min_parts_apart` of IDENTITY_PARTS."""
    choices = identity_choices(schema)
    codes = np.zeros((n, len(IDENTITY_PARTS)), np.int64)
    out = []
    for k in range(n):
        for attempt in range(10_000):
            rng = _rng(NAME, "identity", k, attempt)
            code = np.array([rng.integers(len(choices[p])) for p in IDENTITY_PARTS])
            if k == 0 or ((codes[:k] != code).sum(1) >= min_parts_apart).all():
                break
        else:
            raise DataError(f"could not draw {n} identities {min_parts_apart} parts apart; ask for fewer")
        codes[k] = code
        out.append({p: choices[p][c] for p, c in zip(IDENTITY_PARTS, code)})
    return out


def sample_variation(schema: dict, identity_id: str, identity: dict, v: int) -> dict:
    rng = _rng(NAME, identity_id, "variation", v)
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    expressive = bool(rng.random() < EXPRESSIVE_EYES_PROBABILITY)
    return {"mouth": pick(_enum(schema, "mouth")),
            "eyes": pick(list(EXPRESSIVE_EYES)) if expressive else identity["eyes"],
            "hair": pick(_enum(schema, "hair")), "frontHair": pick(_enum(schema, "frontHair")),
            "sideburn": pick(_enum(schema, "sideburn")),
            "hairColor": pick([c.lower() for c in schema["properties"]["hairColor"]["default"]]),
            "backgroundColor": pick(list(BACKGROUNDS))}


def avatar_options(identity: dict, variation: dict, seed: str = "") -> dict:
    """DiceBear options that draw one image: every part pinned (the seed decides nothing left)."""
    merged = {**identity, **variation}
    opts = {"seed": seed}
    for part, value in merged.items():
        if part == "cheek":
            opts["cheekProbability"] = 0 if value == "none" else 100
            if value != "none":
                opts["cheek"] = [value]
        else:
            opts[part] = [value]
    return opts


_VIEWBOX_MASK = re.compile(r'<mask id="viewboxMask">.*?</mask>', re.S)


def render_avatar(svg: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8. DiceBear clips everything with a full-viewBox <mask>, which cairosvg
    renders as a corner of the image; with radius 0 the mask is a no-op, so it is dropped."""
    from genstudio.formats.svg import rasterize_svg
    svg = _VIEWBOX_MASK.sub("", svg).replace(' mask="url(#viewboxMask)"', "")
    return rasterize_svg(svg, size)


# ---- The build ----

@register_source(NAME, "DiceBear big-ears avatar faces: identities (face, ears, nose, eyes, skin, cheeks) x "
                 "variations (expression, hair, background); split by identity", licence=LICENCE)
def build_faces(out: Path, log: BuildLog, identities: int = 2000, variations: int = 12, size: int = 64,
                version: str = VERSION, packages_dir=None) -> Iterator[dict]:
    _check_node()
    try:
        import cairosvg  # noqa: F401
    except ImportError:
        raise DataError("building faces needs cairosvg: pip install 'genstudio[svg]'") from None
    if identities < 2 or variations < 1 or size < 8:
        raise DataError(f"faces needs identities >= 2, variations >= 1, size >= 8 (got {identities}, "
                        f"{variations}, {size})")
    scratch = out / "_npm"
    try:
        schema = _install_style(scratch, log, version, packages_dir)
        package = f"{STYLE_PACKAGE}@{schema['version']}"
        people = sample_identities(schema, identities)
        ids = [f"{STYLE}-{k:05d}" for k in range(identities)]
        split = {i: split_of(f"{NAME}:{i}", val=VAL_FRACTION, test=TEST_FRACTION) for i in ids}
        jobs = []
        for i, person in zip(ids, people):
            for v in range(variations):
                var = sample_variation(schema, i, person, v)
                jobs.append({"key": f"{i}/{v:02d}", "identity": i, "variation": v, "var": var,
                             "options": avatar_options(person, var, seed=f"{i}/{v:02d}")})
        log(f"{identities} identities x {variations} variations: drawing {len(jobs)} SVGs with node")
        (out / "images").mkdir()
        counts = {s: sum(split[i] == s for i in ids) * variations for s in SPLITS}
        arrays = {s: np.lib.format.open_memmap(out / "images" / f"{s}.npy", mode="w+", dtype=np.uint8,
                                               shape=(counts[s], size, size, 3)) for s in SPLITS}
        rows = {s: 0 for s in SPLITS}
        identity_index = {s: {} for s in SPLITS}
        by_key = {j["key"]: j for j in jobs}
        person_of = dict(zip(ids, people))
        for n, (key, svg) in enumerate(_draw_svgs(scratch, [{"key": j["key"], "options": j["options"]}
                                                            for j in jobs])):
            job = by_key[key]
            s = split[job["identity"]]
            arrays[s][rows[s]] = render_avatar(svg, size)
            index = identity_index[s].setdefault(job["identity"], len(identity_index[s]))
            yield {"id": key, "path": f"images/{s}.npy", "row": rows[s], "split": s, "identity": job["identity"],
                   "identity_index": index, "variation": job["variation"], "style": STYLE, "package": package,
                   "licence": LICENCE, "attribution": ATTRIBUTION, "identity_options": person_of[job["identity"]],
                   "variation_options": job["var"]}
            rows[s] += 1
            if (n + 1) % 2000 == 0:
                log(f"  rendered {n + 1}/{len(jobs)}")
        if sum(rows.values()) != len(jobs):
            raise DataError(f"node drew {sum(rows.values())} of {len(jobs)} avatars")
        for a in arrays.values():
            a.flush()
        del arrays
        (out / "style.json").write_text(json.dumps({
            "style": STYLE, "package": package, "licence": LICENCE, "attribution": ATTRIBUTION,
            "meta": schema["meta"], "identity_parts": identity_choices(schema),
            "expressive_eyes": list(EXPRESSIVE_EYES), "backgrounds": list(BACKGROUNDS),
            "identities": identities, "variations": variations, "size": size,
            "identities_per_split": {s: len(identity_index[s]) for s in SPLITS}}, indent=1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ---- Training view ----

def load_faces(split: str, root: Path | None = None) -> tuple[np.ndarray, list[dict]]:
    """(N, H, W, 3) uint8 memory map and the manifest items of one split, in row order."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: one of {', '.join(SPLITS)}")
    items = load_manifest(NAME, split, root=root)
    if not items:
        raise DataError(f"{NAME} has no {split!r} identities: rebuild with more identities "
                        f"(`genstudio data prepare {NAME} --force`)")
    images = np.load(dataset_dir(NAME, root) / "images" / f"{split}.npy", mmap_mode="r")
    items.sort(key=lambda it: it["row"])
    if len(images) != len(items):
        raise DataError(f"{NAME}/{split}: {len(images)} images but {len(items)} manifest items; rebuild it")
    return images, items


def augment_face(x, generator=None, rotate: float = 10.0, scale: float = 0.1, translate: float = 0.06,
                 brightness: float = 0.15, contrast: float = 0.2, light: float = 0.2, flip: bool = False):
    """Pose / scale / light jitter of one (3, H, W) image in [-1, 1]: a random rotation (degrees),
    zoom, shift (fraction of the side), then brightness, contrast and a linear light gradient in a
    random direction. Borders repeat the edge pixels (the background is one flat colour)."""
    import math

    import torch
    import torch.nn.functional as F
    u = torch.rand(9, generator=generator) * 2 - 1  # 9 uniforms in [-1, 1]
    angle = math.radians(float(u[0]) * rotate)
    s = 1.0 + float(u[1]) * scale
    cos, sin = math.cos(angle) / s, math.sin(angle) / s
    mirror = -1.0 if flip and float(u[8]) > 0 else 1.0
    theta = torch.tensor([[cos * mirror, -sin, float(u[2]) * translate * 2],
                          [sin * mirror, cos, float(u[3]) * translate * 2]], dtype=x.dtype)
    grid = F.affine_grid(theta[None], [1, *x.shape], align_corners=False)
    y = F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    mean = y.mean()
    y = (y - mean) * (1.0 + float(u[4]) * contrast) + mean + float(u[5]) * brightness
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    direction = float(u[6]) * math.pi
    y = y + light * float(u[7]) * (math.cos(direction) * xx + math.sin(direction) * yy).to(x.dtype)
    return y.clamp(-1, 1)


class FaceDataset:
    """One split of the built `faces` dataset as a torch-style dataset.

    item: {"image": (3, size, size) float32 in [-1, 1], "identity": int (0..num_identities-1 within
    the split, in build order), "identity_id": str, "variation": int, "index": int}."""

    def __init__(self, split: str = "train", size: int = 64, augment: bool = True, flip: bool = False,
                 root: Path | None = None, seed: int | None = None):
        self.images, self.items = load_faces(split, root)
        self.split, self.size, self.augment, self.flip = split, size, augment, flip
        self.identity_ids = list(dict.fromkeys(it["identity"] for it in self.items))  # build order
        index = {i: k for k, i in enumerate(self.identity_ids)}
        self.labels = np.array([index[it["identity"]] for it in self.items], np.int64)
        self.num_identities = len(self.identity_ids)
        self.seed = seed
        self._calls = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict:
        import torch
        import torch.nn.functional as F
        x = torch.from_numpy(np.array(self.images[k])).permute(2, 0, 1).float() / 127.5 - 1.0
        if x.shape[-1] != self.size:
            x = F.interpolate(x[None], size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
        if self.augment:
            gen = None
            if self.seed is not None:  # reproducible stream: seed, item, how many items drawn so far
                gen = torch.Generator().manual_seed(hash((self.seed, k, self._calls)) & 0x7FFFFFFF)
                self._calls += 1
            x = augment_face(x, generator=gen, flip=self.flip)
        it = self.items[k]
        return {"image": x.clamp(-1, 1), "identity": int(self.labels[k]), "identity_id": it["identity"],
                "variation": int(it["variation"]), "index": k}


def identity_pairs(split: str = "test", n_pairs: int = 2000, seed: int = 0, root: Path | None = None
                   ) -> list[tuple[int, int, bool]]:
    """Verification pairs over FaceDataset(split) indices: n_pairs // 2 same-identity pairs (two
    different images of one identity) and the rest different-identity pairs, shuffled;
    deterministic in (build, split, n_pairs, seed)."""
    _, items = load_faces(split, root)
    return _pairs([it["identity"] for it in items], n_pairs, seed)


def _pairs(labels: list, n_pairs: int, seed: int) -> list[tuple[int, int, bool]]:
    rng = np.random.default_rng(seed)
    groups: dict = {}
    for k, lab in enumerate(labels):
        groups.setdefault(lab, []).append(k)
    keys = list(groups)
    multi = [g for g in keys if len(groups[g]) >= 2]
    if len(keys) < 2 or not multi:
        raise DataError(f"verification pairs need >= 2 identities and one with >= 2 images "
                        f"(got {len(keys)} identities)")
    pairs = []
    for _ in range(n_pairs // 2):
        g = groups[multi[rng.integers(len(multi))]]
        i, j = rng.choice(len(g), 2, replace=False)
        pairs.append((int(g[i]), int(g[j]), True))
    for _ in range(n_pairs - n_pairs // 2):
        a, b = rng.choice(len(keys), 2, replace=False)
        ga, gb = groups[keys[a]], groups[keys[b]]
        pairs.append((int(ga[rng.integers(len(ga))]), int(gb[rng.integers(len(gb))]), False))
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]
