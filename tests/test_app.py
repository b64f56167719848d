import socket
import urllib.request

import pytest

gr = pytest.importorskip("gradio")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_its_page_with_tabs():
    from apps.app import build_app
    demo = build_app()
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        html = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).read().decode()
        assert "genstudio" in html
        config = urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=30).read().decode()
        assert "is unavailable" not in config
        import json
        labels = [c["props"]["label"] for c in json.loads(config)["components"] if c.get("type") == "tabitem"]
        # flagship first, named for the task (#26); the core tab found through the genstudio.apps entry point
        assert labels[:3] == ["Image → SVG", "Text → SVG", "Glyphs (DiT)"] and labels[-1] == "Tokenizer (VQ)", labels
    finally:
        demo.close()


# ---------------------------------------------------------------- safety (#27, deliverable 5)
import http.client  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app launched as `genstudio app` launches it: no host, no upload limit given."""
    import os
    from apps.app import build_app
    saved = os.environ.pop("GRADIO_SERVER_NAME", None)
    demo = build_app()
    try:
        demo.launch(server_port=_free_port(), prevent_thread_lock=True, quiet=True)
        yield demo
    finally:
        demo.close()
        if saved is not None:
            os.environ["GRADIO_SERVER_NAME"] = saved


def _get(demo, raw_path: str) -> tuple[int, bytes]:
    """GET a raw (not normalised) path, as a hostile client would send it."""
    conn = http.client.HTTPConnection("127.0.0.1", demo.server_port, timeout=30)
    try:
        conn.request("GET", raw_path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_app_binds_localhost_unless_told_otherwise(served, monkeypatch):
    from genstudio.cli import app_cmd
    assert inspect.signature(app_cmd).parameters["host"].default.default == "127.0.0.1"
    assert served.server_name == "127.0.0.1" and served.local_url.startswith("http://127.0.0.1:")
    # `genstudio app` goes through the app's launch: its host and the upload limit reach Gradio
    seen = {}
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: seen.update(kw))
    from typer.testing import CliRunner
    from genstudio.cli import app as cli
    result = CliRunner().invoke(cli, ["app"])
    assert result.exit_code == 0, result.output
    assert seen["server_name"] == "127.0.0.1" and seen["share"] is False
    assert seen["max_file_size"] == 20_000_000


def _file_requests():
    secret = REPO / "README.md"
    checkpoint = next(p for p in sorted((REPO / "checkpoints").rglob("*.json")))
    rel = checkpoint.relative_to(REPO)
    return {
        "/etc/passwd": "/gradio_api/file=/etc/passwd",
        "repo file": f"/gradio_api/file={secret}",
        "repo file, relative": "/gradio_api/file=README.md",
        "checkpoint": f"/gradio_api/file={checkpoint}",
        "checkpoint, relative": f"/gradio_api/file={rel}",
        "../ traversal": "/gradio_api/file=../../../../../../etc/passwd",
        "%2F traversal": "/gradio_api/file=..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
        "%2F absolute": "/gradio_api/file=%2Fetc%2Fpasswd",
        "%2e%2e traversal": "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "old form": "/file=/etc/passwd",
        "cache-dir escape": f"/gradio_api/file={served_cache()}/../../../../../etc/passwd",
    }


def test_app_serves_its_own_uploads(served):
    """The control for the refusals below: this URL form does serve the app's own files."""
    import json
    boundary = "genstudio-test"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"tiny.png\"\r\n"
               "Content-Type: image/png\r\n\r\n").encode() + _png() + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", served.server_port, timeout=30)
    try:
        conn.request("POST", "/gradio_api/upload", body=payload,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        assert response.status == 200
        uploaded = json.loads(response.read())[0]
    finally:
        conn.close()
    status, body = _get(served, f"/gradio_api/file={uploaded}")
    assert status == 200 and body == _png()


def served_cache() -> str:
    import tempfile
    return str(Path(tempfile.gettempdir()) / "gradio")


@pytest.mark.parametrize("what", list(_file_requests()))
def test_app_refuses_files_outside_its_own(served, what):
    status, body = _get(served, _file_requests()[what])
    assert status in (403, 404), (what, status, body[:200])
    assert b"root:x:" not in body and b"_class_name" not in body and b"# genstudio" not in body


def test_app_has_upload_limit_and_queue(served, monkeypatch):
    from apps.app import CONCURRENCY_LIMIT, MAX_QUEUE, build_app, max_upload_bytes
    assert served.max_file_size == 20_000_000
    assert served._queue.max_size == MAX_QUEUE and CONCURRENCY_LIMIT == 1
    assert served._queue.default_concurrency_limit == 1  # every event left at "default" runs one at a time
    runs = [fn for fn in served.fns.values() if fn.queue]
    assert len(runs) >= 6 and all(fn.concurrency_limit in ("default", 1) for fn in runs)
    config = served.get_config_file()
    assert config["max_file_size"] == 20_000_000
    # an over-limit upload is refused by the server, before any tab sees it
    boundary = "genstudio-test"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
               "Content-Type: image/png\r\n\r\n").encode() + b"\0" * 20_000_100 + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", served.server_port, timeout=60)
    try:
        conn.request("POST", "/gradio_api/upload", body=payload,
                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = conn.getresponse()
        assert response.status in (400, 413), response.status
        response.read()
    finally:
        conn.close()
    monkeypatch.setenv("GENSTUDIO_MAX_UPLOAD_MB", "1.5")
    assert max_upload_bytes() == 1_500_000
    monkeypatch.setenv("GENSTUDIO_MAX_UPLOAD_MB", "lots")
    assert max_upload_bytes() == 20_000_000


# ---------------------------------------------------------------- bad uploads meet the CLI's loaders
def _png(size=(24, 24)) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def bad_files(tmp_path):
    files = {"truncated.png": _png()[:60], "text.png": b"not an image at all\n", "empty.png": b"",
             "truncated.gif": b"GIF89a\x10\x00\x10\x00", "nan.obj": b"v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("name", ["truncated.png", "text.png", "empty.png"])
def test_image_tabs_refuse_a_bad_upload_with_a_clear_message(bad_files, name):
    from apps import ui_errors
    from apps.inpaint import inpaint
    from apps.svg import convert
    from apps.tokenizer import run as reconstruct
    path = str(bad_files / name)
    raw = {"path": path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}  # as preprocess=False gives it
    calls = {"svg": lambda: ui_errors(convert)(raw), "svg (path)": lambda: ui_errors(convert)(path),
             "tokenizer": lambda: reconstruct(raw),
             "inpaint": lambda: ui_errors(inpaint)({"background": raw, "layers": [], "composite": None})}
    for tab, call in calls.items():
        with pytest.raises(gr.Error, match="not a readable image|too small|does not exist") as caught:
            call()
        assert name in str(caught.value) and "Traceback" not in str(caught.value), tab


def test_image_tabs_apply_the_pixel_budget(tmp_path, monkeypatch):
    from apps import ui_errors
    from apps.svg import convert
    from apps.tokenizer import run as reconstruct
    path = tmp_path / "big.png"
    path.write_bytes(_png((40, 40)))
    monkeypatch.setenv("GENSTUDIO_MAX_PIXELS", "1000")
    for call in (lambda: ui_errors(convert)(str(path)), lambda: reconstruct(str(path))):
        with pytest.raises(gr.Error, match="megapixels"):
            call()


def test_inpaint_tab_refuses_a_bad_painted_layer(tmp_path):
    from apps import ui_errors
    from apps.inpaint import inpaint
    picture, layer = tmp_path / "picture.png", tmp_path / "layer.png"
    picture.write_bytes(_png((24, 24)))
    layer.write_bytes(_png((24, 24))[:60])
    with pytest.raises(gr.Error, match="painted mask is not a readable image"):
        ui_errors(inpaint)({"background": {"path": str(picture)}, "layers": [{"path": str(layer)}]})


def test_video_mesh_and_generate_tabs_refuse_bad_input(bad_files):
    from apps import ui_errors
    from apps.generate import run_generate
    from apps.mesh import convert as mesh
    from apps.video import run_video
    for call, name in ((lambda: ui_errors(run_video)(str(bad_files / "truncated.gif")), "truncated.gif"),
                       (lambda: ui_errors(run_video)(str(bad_files / "text.png"), "animate"), "text.png"),
                       (lambda: ui_errors(mesh)(str(bad_files / "nan.obj")), "nan.obj"),
                       (lambda: ui_errors(mesh)(str(bad_files / "empty.png")), "empty.png")):
        with pytest.raises(gr.Error) as caught:
            call()
        assert name in str(caught.value) and "Traceback" not in str(caught.value)
    with pytest.raises(gr.Error, match="Type one or more classes"):
        ui_errors(run_generate)("  ,  ")
    with pytest.raises(gr.Error, match="At most"):
        ui_errors(run_generate)("A B C D E", num=16)


# ---------------------------------------------------------------- progress, summaries, downloads (#26)
def test_tokenizer_tab_summarises_and_offers_a_png(tmp_path):
    import re
    from PIL import Image
    from apps.tokenizer import run as reconstruct
    path = tmp_path / "picture.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    rec, text, download = reconstruct(str(path))
    assert re.match(r"\d+×\d+ = \d+ tokens \(\d+ different codes\) for 32×32 pixels\.", text), text
    assert "% similar to your image (SSIM)" in text and "dB" in text and "{" not in text
    assert download.endswith(".png") and Image.open(download).size == rec.size


def test_download_folders_share_one_root_and_old_ones_are_removed():
    import os
    import time

    from apps import KEEP_DOWNLOADS_S, temp_folder
    first = temp_folder("svg")
    (first / "genstudio.svg").write_text("<svg/>")
    old = time.time() - KEEP_DOWNLOADS_S - 10
    os.utime(first, (old, old))
    second = temp_folder("svg")
    assert second.parent == first.parent and second.is_dir() and second.name.startswith("svg-")
    assert not first.exists()


def test_tabs_say_when_the_model_loads(monkeypatch):
    import apps
    seen = []
    monkeypatch.setattr(apps, "_LOADED", set())
    monkeypatch.setattr(apps, "pipeline", _fake_cached_pipeline())
    report = lambda *args, desc=None, **kw: seen.append(desc)  # noqa: E731
    apps.load_pipeline("svg", "m", report, "refining…")
    apps.load_pipeline("svg", "m", report, "refining…")
    assert seen == ["loading the model…", "refining…", "refining…"]
    apps.load_pipeline("svg", "m")  # a direct call, no progress: nothing to report, no error
    # every tab's callback takes Gradio's progress (track_tqdm: the pipelines' bars show step k of n)
    import inspect
    from apps.generate import run_generate
    from apps.inpaint import inpaint
    from apps.mesh import convert as mesh
    from apps.svg import convert as svg
    from apps.tokenizer import run as tokenizer
    from apps.video import run_video
    for fn in (svg, run_generate, inpaint, run_video, mesh, tokenizer):
        default = inspect.signature(fn).parameters["progress"].default
        assert isinstance(default, gr.Progress) and default.track_tqdm, fn


def _fake_cached_pipeline():
    import functools
    import apps

    @functools.lru_cache(maxsize=4)
    def pipeline(task, model=None):
        apps._LOADED.add((task, model))
        return object()
    return pipeline


def test_every_tab_shows_a_summary_and_a_download():
    from apps.app import build_app
    demo = build_app()
    try:
        types = [c.get("type") for c in demo.get_config_file()["components"]]
        assert "json" not in types  # no raw JSON panels left
        labels = [c["props"].get("label") for c in demo.get_config_file()["components"] if c.get("type") == "file"]
        for suffix in (".svg", ".png", ".gif", ".glb / .obj"):
            assert any(label and label.endswith(suffix) for label in labels), (suffix, labels)
    finally:
        demo.close()


def test_error_messages_show_an_uploads_name_not_its_gradio_temp_path(tmp_path, monkeypatch):
    """Gradio keeps an upload as <temp>/gradio/<hash>/<name>; a message names the file, never that path."""
    import os
    import tempfile
    from apps import hide_paths, ui_errors
    from apps.inpaint import inpaint
    from apps.svg import convert
    root = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(root))
    upload = root / "0f3a9c1e5b7d2a4c6e8f0a1b3c5d7e9f" / "my photo.png"
    upload.parent.mkdir(parents=True)
    upload.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    raw = {"path": str(upload), "orig_name": "my photo.png", "meta": {"_type": "gradio.FileData"}}
    calls = {"path": lambda: ui_errors(convert)(str(upload)), "raw": lambda: ui_errors(convert)(raw),
             "editor": lambda: ui_errors(inpaint)({"background": raw, "layers": [], "composite": None})}
    for how, call in calls.items():
        with pytest.raises(gr.Error) as caught:
            call()
        message = caught.value.message
        assert "my photo.png" in message and "not a readable image" in message, (how, message)
        assert str(root) not in message and "0f3a9c1e" not in message and str(tmp_path) not in message, (how, message)

    def fails(path):  # a path of Gradio's that is not the argument itself, and a gr.Error naming one
        raise ValueError(f"{root}/a1b2c3/converted.png: could not be written")
    with pytest.raises(gr.Error) as caught:
        ui_errors(fails)("some text")
    assert caught.value.message == "converted.png: could not be written"

    def refuses(path):
        raise gr.Error(f"{path} is empty")
    with pytest.raises(gr.Error) as caught:
        ui_errors(refuses)(str(upload))
    assert caught.value.message == "my photo.png is empty"
    monkeypatch.delenv("GRADIO_TEMP_DIR")  # Gradio's default folder: <temp>/gradio
    default = os.path.join(tempfile.gettempdir(), "gradio", "abc123", "photo.png")
    assert hide_paths(f"{default} is not a readable image") == "photo.png is not a readable image"
    assert hide_paths("a prompt / with slashes", (("a prompt / with slashes",), {})) == "a prompt / with slashes"


# ---------------------------------------------------------------- examples, descriptions, mask upload (#26)
def _config(demo) -> dict:
    """The app's /config, read as the browser reads it."""
    import json
    status, body = _get(demo, "/config")
    assert status == 200
    return json.loads(body)


def _tabs(config) -> dict:
    """{tab label: [its components in page order]} from the /config layout tree."""
    components = {c["id"]: c for c in config["components"]}

    def inside(node):
        for child in node.get("children", []):
            yield components[child["id"]]
            yield from inside(child)

    tabs = {}

    def walk(node):
        component = components.get(node["id"], {})
        if component.get("type") == "tabitem":
            tabs[component["props"]["label"]] = list(inside(node))
        else:
            for child in node.get("children", []):
                walk(child)
    walk(config["layout"])
    return tabs


def test_every_tab_has_a_description_and_examples_that_only_fill_inputs(served):
    from apps.app import TAB_LABELS
    config = _config(served)
    tabs = _tabs(config)
    assert set(TAB_LABELS.values()) <= set(tabs), tabs.keys()
    for label, components in tabs.items():
        # a one-line description at the top
        assert components[0]["type"] == "markdown", (label, components[0]["type"])
        description = components[0]["props"]["value"]
        assert description and "\n" not in description.strip() and len(description) < 400, (label, description)
        # examples (gr.Examples is a "dataset" in the config) with at least two samples
        datasets = [c for c in components if c["type"] == "dataset"]
        assert len(datasets) == 1 and len(datasets[0]["props"]["samples"]) >= 2, label
    # clicking an example only fills its inputs: no model run, nothing cached
    datasets = {c["id"]: c for c in config["components"] if c["type"] == "dataset"}
    clicks = [d for d in config["dependencies"] if any(t[0] in datasets for t in d["targets"])]
    assert len(clicks) == len(datasets)
    for dependency in clicks:
        dataset = datasets[dependency["targets"][0][0]]
        assert dependency["outputs"] == dataset["props"]["component_ids"] and dependency["queue"] is False
    # image examples show thumbnails (FileData with a URL), the text tabs show their prompts/classes
    by_tab = {label: next(c for c in components if c["type"] == "dataset") for label, components in tabs.items()}
    for label in ("Image → SVG", "Tokenizer (VQ)", "Video"):
        first = by_tab[label]["props"]["samples"][0][0]
        assert "/gradio_api/file=" in first["url"] and first["orig_name"].endswith((".png", ".gif")), label
        from urllib.parse import urlsplit
        status, body = _get(served, urlsplit(first["url"]).path)  # the thumbnail is served
        assert status == 200 and body[:4] in (b"\x89PNG", b"GIF8"), (label, status)
    assert [s[0] for s in by_tab["Text → SVG"]["props"]["samples"]] == ["a rocket", "house", "arrow left",
                                                                        "smiling face"]
    assert all(isinstance(s[0], str) and s[0].strip() for s in by_tab["Glyphs (DiT)"]["props"]["samples"])
    mesh = by_tab["Mesh → artist mesh"]["props"]
    assert len(mesh["sample_labels"]) == len(mesh["samples"]) and all("faces" in x for x in mesh["sample_labels"])


def test_inpaint_tab_takes_an_uploaded_mask_and_its_examples_fill_both(served):
    config = _config(served)
    components = _tabs(config)["Inpaint"]
    uploads = [c for c in components if c["type"] == "image" and "mask" in (c["props"].get("label") or "")
               and c["props"].get("interactive") is not False]
    assert len(uploads) == 1, [c["props"].get("label") for c in components]
    mask_id = uploads[0]["id"]
    editor = next(c for c in components if c["type"] == "imageeditor")
    runs = [d for d in config["dependencies"] if mask_id in d["inputs"] and editor["id"] in d["inputs"]
            and d.get("queue") is not False]
    assert len(runs) == 1  # the Inpaint button's run takes the picture and the uploaded mask
    description = components[0]["props"]["value"]
    assert "upload a mask" in description and "wins over the brush" in description
    dataset = next(c for c in components if c["type"] == "dataset")
    assert dataset["props"]["component_ids"] == [editor["id"], mask_id]
    pairs = [(s[0]["background"]["path"], s[1]["orig_name"]) for s in dataset["props"]["samples"]]
    names = sorted((Path(picture).name, mask) for picture, mask in pairs)
    assert names == [("green.png", "green_mask.png"), ("rocket.png", "rocket_mask.png")]  # masks never as pictures


class _RecordingInpaint:
    """Stands in for the PUT pipeline: records the picture and hole it is given, returns the picture."""
    def __init__(self):
        self.calls = []

    def __call__(self, image, hole, num_samples=1, **kwargs):
        from types import SimpleNamespace
        self.calls.append((image, np.asarray(hole).copy(), num_samples))
        return SimpleNamespace(images=[image.copy() for _ in range(num_samples)], work_size=image.size,
                               info={"hole_ratio": float(np.mean(hole)), "sampling_steps": 3},
                               metadata={"seconds": 0.1})


@pytest.fixture
def stub_inpaint(monkeypatch):
    import apps.inpaint
    stub = _RecordingInpaint()
    monkeypatch.setattr(apps.inpaint, "load_pipeline", lambda task, model, progress=None, then=None: stub)
    return stub


import numpy as np  # noqa: E402

INPAINT_EXAMPLES = REPO / "examples" / "inpaint"


def test_inpaint_run_applies_an_uploaded_mask(stub_inpaint):
    from PIL import Image
    from apps import ui_errors
    from apps.inpaint import run_tab
    picture, mask = INPAINT_EXAMPLES / "green.png", INPAINT_EXAMPLES / "green_mask.png"
    editor = {"background": {"path": str(picture), "meta": {"_type": "gradio.FileData"}}, "layers": [],
              "composite": None}  # as the tab's click gives it (preprocess=False)
    raw_mask = {"path": str(mask), "orig_name": mask.name, "meta": {"_type": "gradio.FileData"}}
    images, masked, text, files = ui_errors(run_tab)(editor, raw_mask, 2, 0, 50)
    (image, hole, n), = stub_inpaint.calls
    expected = np.asarray(Image.open(mask).convert("L")) > 127
    assert n == 2 and image.size == Image.open(picture).size
    assert hole.shape == expected.shape and np.array_equal(hole, expected) and 0 < hole.sum() < hole.size
    assert f"{100 * expected.mean():.1f} %" in text and "resized" not in text and len(files) == 2
    assert (np.asarray(masked)[hole] == 255).all()  # the preview shows the uploaded hole


def test_inpaint_uploaded_mask_wins_over_the_brush_and_is_resized(stub_inpaint, tmp_path):
    from PIL import Image
    from apps import ui_errors
    from apps.inpaint import inpaint
    picture = INPAINT_EXAMPLES / "green.png"
    w, h = Image.open(picture).size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    layer.paste((255, 0, 255, 255), (0, 0, 10, 10))  # brush strokes in the top-left corner
    layer.save(tmp_path / "layer.png")
    small = Image.new("L", (w // 2, h // 2), 0)
    small.paste(255, (w // 4, h // 4, w // 2, h // 2))  # the bottom-right quarter, at half size
    small.save(tmp_path / "small_mask.png")
    editor = {"background": {"path": str(picture)}, "layers": [{"path": str(tmp_path / "layer.png")}]}
    _, _, text, _ = ui_errors(inpaint)(editor, 1, mask=str(tmp_path / "small_mask.png"))
    hole = stub_inpaint.calls[-1][1]
    assert hole.shape == (h, w) and not hole[:10, :10].any() and hole[-1, -1] and hole[h // 2 + 1, w // 2 + 1]
    assert f"The mask ({w // 2}×{h // 2}) was resized to the picture's size ({w}×{h})." in text
    assert "The uploaded mask was used; the brush strokes were ignored." in text
    # without an uploaded mask the brush still works
    ui_errors(inpaint)(editor, 1, mask=None)
    assert stub_inpaint.calls[-1][1][:10, :10].all() and stub_inpaint.calls[-1][1].sum() == 100
    # clear messages: a mask with no hole, a mask without a picture, a mask that is not an image
    Image.new("L", (w, h), 0).save(tmp_path / "black.png")
    (tmp_path / "broken_mask.png").write_bytes(b"not a png")
    for value, mask, message in (({"background": {"path": str(picture)}}, tmp_path / "black.png", "has no hole"),
                                 (None, tmp_path / "black.png", "Upload the image to inpaint too"),
                                 ({"background": {"path": str(picture)}}, tmp_path / "broken_mask.png",
                                  "the uploaded mask: .*broken_mask.png.*not a readable image")):
        with pytest.raises(gr.Error, match=message):
            ui_errors(inpaint)(value, 1, mask=str(mask))


def test_video_tab_shows_only_the_controls_of_the_chosen_task():
    from apps.video import TASK_HELP, example_rows, task_controls
    for task in TASK_HELP:
        help_line, clip, num_known = task_controls(task)
        assert help_line.startswith(f"**{task}**") and "\n" not in help_line
        assert clip["visible"] == (task != "generate") and num_known["visible"] == (task in ("predict", "interpolate"))
    rows = example_rows()
    assert len(rows) >= 2 and all(r[0] == r[1] and r[0].endswith(".gif") and r[2] in TASK_HELP for r in rows)
