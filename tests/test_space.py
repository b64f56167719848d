"""`genstudio space export`: the exported folder is a Gradio Space whose app has every installed tab."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runner import run_genstudio

pytest.importorskip("gradio")

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys
sys.path.insert(0, {space!r})
import app, apps
from importlib.metadata import entry_points
labels = [c["props"].get("label") for c in app.demo.config["components"] if c.get("type") == "tabitem"]
text = json.dumps(app.demo.config)
print(json.dumps({{"apps_from": apps.__file__, "labels": labels, "unavailable": "is unavailable" in text,
                  "tasks": sorted(ep.name for ep in entry_points(group="genstudio.apps"))}}))
"""


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """One export for the module (the tests only read it; the fresh-venv install builds inside it, as a Space does)."""
    space = tmp_path_factory.mktemp("export") / "space"
    r = run_genstudio("space", "export", space)
    assert r.returncode == 0, r.stderr
    assert not list(space.rglob("__pycache__"))
    return space


def test_exported_space_boots_with_every_tab(space):
    front = (space / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    assert (space / "requirements.txt").read_text().startswith(".[")  # the Space installs the package itself
    assert "*.safetensors filter=lfs" in (space / ".gitattributes").read_text()
    assert (space / "checkpoints" / "starvector-icons-S" / "config.json").exists()
    # the Space's own app.py and apps/ (not this checkout's) build one tab per installed task
    probe = subprocess.run([sys.executable, "-B", "-c", PROBE.format(space=str(space))], cwd=space,
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    assert info["apps_from"].startswith(str(space)) and not info["unavailable"]
    assert len(info["labels"]) == len(info["tasks"]) >= 6 and info["labels"][0] == "Image → SVG"
    r = run_genstudio("space", "export", space)
    assert r.returncode != 0 and "exists" in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------------------------------------------
# The Space in a fresh venv, installed from its own requirements.txt, offline and cheap: the fresh venv sees,
# through a .pth, links to the distributions of this checkout's venv that the Space's requirements name
# (their whole dependency closure) and nothing else: not genstudio's own install, not the dev extras. A
# dependency missing from the Space's requirements is then missing in the fresh venv too.
# ---------------------------------------------------------------------------------------------------------

TOOLS = ("pip", "setuptools", "wheel", "packaging")  # for `pip install --no-build-isolation .` and the check

# Run by the fresh venv's python after the install: is every requirement of requirements.txt (and of the
# extras it names, read from the installed Space's metadata, i.e. its pyproject) met by what it sees?
CHECK_REQUIREMENTS = r"""
import json, sys
from importlib.metadata import distribution, PackageNotFoundError
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

problems, seen = [], set()

def check(req, why, extras_env=("",)):
    if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras_env):
        return
    try:
        dist = distribution(req.name)
    except PackageNotFoundError:
        problems.append(f"{req} ({why}): not installed"); return
    if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
        problems.append(f"{req} ({why}): {dist.version} installed")
    provided = {canonicalize_name(e) for e in dist.metadata.get_all("Provides-Extra") or []}
    problems.extend(f"{req} ({why}): {req.name} has no extra {e!r}" for e in sorted(req.extras)
                    if canonicalize_name(e) not in provided)
    key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
    if key not in seen:
        seen.add(key)
        for line in dist.requires or []:
            check(Requirement(line), f"{why} -> {req.name}", ("", *sorted(req.extras)))

for line in open(sys.argv[1]).read().splitlines():
    line = line.split("#")[0].strip()
    if line.startswith("."):                       # the Space folder itself: `.[extras]`
        line = "genstudio" + line[1:]
    if line:
        check(Requirement(line), "requirements.txt")
print(json.dumps(problems))
"""

# Run by the fresh venv's python in the Space folder: every module of the Space imports.
IMPORT_ALL = r"""
import importlib, json, pkgutil
bad = {}
for top in ("genstudio", "pipelines", "apps"):
    for m in pkgutil.walk_packages(importlib.import_module(top).__path__, top + "."):
        try:
            importlib.import_module(m.name)
        except BaseException as e:
            bad[m.name] = f"{type(e).__name__}: {e}"
print(json.dumps(bad))
"""

# Run by the fresh venv's python in the Space folder: every module the Space's code imports, at the top or
# inside a function (most third-party imports are lazy), can be found, except those it guards with
# try/except ImportError. {module: where it is imported} for those that cannot.
FIND_IMPORTS = r"""
import ast, importlib.util, json, sys
from pathlib import Path
root = Path.cwd()
own = {"genstudio", "pipelines", "apps", "app"}
needed = {}
def guarded(node, parents):
    for p in parents:
        if isinstance(p, ast.Try):
            for h in p.handlers:
                names = [] if h.type is None else [n.id for n in ast.walk(h.type) if isinstance(n, ast.Name)]
                if h.type is None or {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"} & set(names):
                    return True
    return False
def visit(node, parents, path):
    for child in ast.iter_child_nodes(node):
        inside = parents + [node] if isinstance(node, ast.Try) and child in node.body else parents
        names = []
        if isinstance(child, ast.Import):
            names = [a.name for a in child.names]
        elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
            names = [child.module]
        for n in names:
            top = n.split(".")[0]
            if top not in own and not guarded(child, inside):
                needed.setdefault(top, f"{path.relative_to(root)}:{child.lineno}")
        visit(child, inside, path)
for pkg in ("genstudio", "pipelines", "apps"):
    for path in sorted((root / pkg).rglob("*.py")):
        visit(ast.parse(path.read_text(), str(path)), [], path)
print(json.dumps({n: w for n, w in sorted(needed.items()) if importlib.util.find_spec(n) is None}))
"""

FRESH_PROBE = PROBE.replace("import app, apps\n", "import app, apps, genstudio, pipelines\n").replace(
    '"tasks": sorted(ep.name for ep in entry_points(group="genstudio.apps"))',
    '"tasks": sorted(ep.name for ep in entry_points(group="genstudio.apps")), '
    '"from": [m.__file__ for m in (genstudio, pipelines, apps, app)], "prefix": sys.prefix, '
    '"ep_dists": sorted({{str(ep.dist._path) for g in ("genstudio.apps", "genstudio.tasks", "genstudio.app") '
    'for ep in entry_points(group=g)}}), '
    '"genstudio_dists": [str(d._path) for d in __import__("importlib.metadata").metadata.distributions() '
    'if d.metadata["Name"] == "genstudio"]')


def _space_closure(space: Path) -> tuple[dict, list]:
    """The distributions (of this venv) that the Space's requirements.txt needs, transitively: the local
    requirement `.[extras]` is read from the Space's own pyproject. Returns ({name: dist}, missing)."""
    import tomllib
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((space / "pyproject.toml").read_text())["project"]
    dists, missing, seen = {}, [], set()

    def walk(req: Requirement, extras_env=("",)) -> None:
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras_env):
            return
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            return
        seen.add(key)
        if key[0] == canonicalize_name(project["name"]):  # the Space itself (also a self-referencing extra)
            unknown = set(req.extras) - set(project.get("optional-dependencies", {}))
            missing.extend(f"{project['name']}[{e}] (no such extra in the Space's pyproject)" for e in unknown)
            lines = project.get("dependencies", []) + [r for e in sorted(req.extras - unknown)
                                                       for r in project["optional-dependencies"][e]]
            for line in lines:
                walk(Requirement(line))
            return
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.append(str(req))
            return
        if req.specifier and not req.specifier.contains(dist.version, prereleases=True):
            missing.append(f"{req} ({dist.version} here)")
        dists[key[0]] = dist
        for line in dist.requires or []:
            walk(Requirement(line), ("", *sorted(req.extras)))

    for line in (space / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            walk(Requirement(project["name"] + line[1:] if line.startswith(".") else line))
    return dists, missing


def _link_dists(dists, folder: Path) -> None:
    """A folder of links to the site-packages entries (packages, modules, dist-info) of `dists`."""
    folder.mkdir()
    for dist in dists:
        site = Path(dist.locate_file(""))
        assert dist.files is not None, f"{dist.metadata['Name']} has no RECORD: cannot tell its files"
        for top in {f.parts[0] for f in dist.files if f.parts[0] not in ("..", "__pycache__")}:
            if (site / top).exists() and not (folder / top).exists() and not top.endswith(".pth"):
                (folder / top).symlink_to(site / top)


def _fresh_venv(root: Path, deps: Path) -> Path:
    """A venv from the base interpreter (no pip, no system site-packages) that sees `deps` through a .pth."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    venv = root / "venv"
    made = subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], capture_output=True, text=True,
                          timeout=120)
    python = venv / "bin" / "python"
    if made.returncode != 0 or not python.exists():
        pytest.skip(f"cannot create a venv on this machine with {base}: {made.stderr.strip()[-300:]}")
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "space-test-deps.pth").write_text(f"{deps}\n")
    return python


def test_space_installs_in_a_fresh_venv_from_its_own_requirements(space, tmp_path):
    from importlib import metadata

    dists, missing = _space_closure(space)
    assert not missing, f"the Space's requirements name what no install provides: {missing}"
    _link_dists(dists.values(), tmp_path / "deps")
    tools = []
    for name in TOOLS:  # pip (and what it builds with) for the install step only: not the Space's to need
        try:
            tools.append(metadata.distribution(name))
        except metadata.PackageNotFoundError:
            assert name != "pip", "no pip in this venv to install the Space with"
    _link_dists(tools, tmp_path / "tools")
    python = _fresh_venv(tmp_path, tmp_path / "deps")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PYTHONDONTWRITEBYTECODE="1", GRADIO_ANALYTICS_ENABLED="False")
    env.pop("GENSTUDIO_CHECKPOINTS", None)
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def run(*args, cwd=outside, tools=False):
        return subprocess.run([str(python), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300,
                              env={**env, "PYTHONPATH": str(tmp_path / "tools")} if tools else env)

    # nothing of genstudio is visible before the Space installs itself
    r = run("-c", "import importlib.util as u; print([n for n in ('genstudio', 'pipelines', 'apps') if u.find_spec(n)])")
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr[-2000:])
    # the Space's requirements.txt, installed as the Space would (offline: its local requirement, no deps)
    local = [line for line in (space / "requirements.txt").read_text().split() if line.startswith(".")]
    assert len(local) == 1, "requirements.txt should install the Space folder itself (`.[extras]`)"
    r = run("-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation", "--no-compile",
            local[0], cwd=space, tools=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    # pip's in-tree build leaves build/ and genstudio.egg-info in the Space folder: not part of the Space,
    # and the egg-info would shadow the installed metadata (sys.path[0] is the Space folder)
    for leftover in [space / "build", *space.glob("*.egg-info")]:
        shutil.rmtree(leftover)
    # every requirement it names (and its extras' requirements) is met by what the fresh venv sees
    r = run("-c", CHECK_REQUIREMENTS, space / "requirements.txt", tools=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []
    # the Space runs `python app.py` in its folder: every module of the Space imports there ...
    r = run("-c", IMPORT_ALL, cwd=space)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {}, "modules that fail to import in the Space"
    r = run("-c", FIND_IMPORTS, cwd=space)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {}, "modules the Space imports but does not require"
    # ... and its app builds one tab per installed task, from the Space's own code and metadata
    probe = run("-c", FRESH_PROBE.format(space=str(space)), cwd=space)
    assert probe.returncode == 0, probe.stderr[-3000:]
    info = json.loads(probe.stdout.strip().splitlines()[-1])
    assert info["prefix"] == str(python.parent.parent)
    assert all(f.startswith(str(space)) and not f.startswith(str(REPO)) for f in info["from"]), info["from"]
    assert len(info["genstudio_dists"]) == 1 and info["genstudio_dists"][0].startswith(info["prefix"]), info
    assert info["ep_dists"] == info["genstudio_dists"], info["ep_dists"]  # the entry points are the Space's
    assert not info["unavailable"], "a tab is unavailable in the fresh venv"
    assert len(info["labels"]) == len(info["tasks"]) >= 6 and info["labels"][0] == "Image → SVG", info

