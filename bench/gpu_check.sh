#!/usr/bin/env bash
# The prepared GPU check (bench/gpu_check.py): bash bench/gpu_check.sh [--device cpu --tiny] [--out FILE]
# Python: $PYTHON, else the checkout's .venv, else python3.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then py="$here/../.venv/bin/python"; else py=python3; fi
fi
exec "$py" "$here/gpu_check.py" "$@"
