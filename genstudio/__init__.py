"""genstudio: a generative vision suite on one shared core.

    import genstudio
    pipe = genstudio.load("svg")                 # the task's pipeline on its shipped checkpoint
    pipe("logo.png", num_candidates=4).save("logo.svg")
"""


def load(task: str, model=None, device: str = "auto", precision: str = "auto", **kwargs):
    """The pipeline of `task` (svg, inpaint, video, mesh, ...) on `model` (default: the shipped one)."""
    from .pipeline import load as _load
    return _load(task, model, device=device, precision=precision, **kwargs)
