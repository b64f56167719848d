# Sourced by scripts/gpu-*.sh on a GPU box that reaches no registry: install the carried .gpu/whl (the genstudio
# wheel for its entry points, diffusers without its pipelines, importlib_metadata; `make gpu-prep`) into
# /tmp/site, on top of that box's own python3 + torch + transformers (once per box: a second call reuses it).
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site
if [ ! -f /tmp/site/.genstudio-installed ]; then
  mkdir -p /tmp/site
  ${PY:-python3} -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpu/whl/*.whl || exit 1
  for t in .gpu/whl/*.tgz; do tar xzf "$t" -C /tmp/site || exit 1; done
  touch /tmp/site/.genstudio-installed
fi
G="${PY:-python3} -m genstudio.cli"
