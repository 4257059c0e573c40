#!/usr/bin/env bash
# Sets up everything abcmusic needs: Debian's abcmidi/abcm2ps and a .venv with the pinned Python packages.
# Idempotent: a second run only checks. Without root, ask an admin for: apt-get install abcmidi abcm2ps python3-venv
# (and, for generate.py --audio, timidity freepats)
set -euo pipefail
cd "$(dirname "$0")"

apt_packages=(abcmidi abcm2ps)
missing=()
command -v midi2abc >/dev/null && command -v abc2midi >/dev/null || missing+=(abcmidi)
command -v abcm2ps >/dev/null || missing+=(abcm2ps)
python=${PYTHON:-python3}  # PYTHON=python3.11 ./install.sh picks another interpreter (cluster.yaml does)
"$python" -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "install.sh: apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "install.sh: missing system packages: ${missing[*]}; as root run: apt-get install ${missing[*]}" >&2
    exit 2
  fi
fi

# Optional: a General MIDI synthesizer for generate.py --audio (small: timidity with the freepats patches).
if ! command -v timidity >/dev/null && ! command -v fluidsynth >/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "install.sh: apt-get install timidity freepats (for generate.py --audio)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends timidity freepats >/dev/null
  else
    echo "install.sh: note: generate.py --audio needs a synthesizer; as root run:" \
         "apt-get install --no-install-recommends timidity freepats" >&2
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
# pip skips the work when the pinned versions are already there.
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]" -c constraints.txt
.venv/bin/python -c 'import abcmusic, ray, torch, mlflow, music21' \
  || { echo "install.sh: the Python environment in .venv is incomplete" >&2; exit 2; }
echo "install.sh: ready (.venv, $(midi2abc -ver | cut -d' ' -f1-1) midi2abc)"
