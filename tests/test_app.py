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
        assert labels[:2] == ["Image → SVG", "Glyphs (DiT)"] and labels[-1] == "Tokenizer (VQ)", labels
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
