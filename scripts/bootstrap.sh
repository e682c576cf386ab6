#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv; idempotent and quick
# when nothing changed. Sourced by the other scripts; RTINDEX_EXTRAS picks extras.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
extras="${RTINDEX_EXTRAS:-dev}"
python_bin="${RTINDEX_PYTHON:-$(command -v python3.11 || command -v python3)}"
if ! "$python_bin" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
  echo "rtindex needs Python 3.11 (found $("$python_bin" --version 2>&1)); set RTINDEX_PYTHON to a 3.11 interpreter" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $("$python_bin" --version)"
  "$python_bin" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
stamp="$(sha256sum pyproject.toml | cut -c1-16)-$extras"
installed="$(cat .setup-stamp 2>/dev/null || true)"
# up to date when this pyproject.toml was installed with at least these extras: after
# scripts/test.sh (dev,tf,gpu), scripts/demo.sh (dev) must not reinstall
up_to_date=0
if [ "${installed%%-*}" = "${stamp%%-*}" ]; then
  up_to_date=1
  for extra in ${extras//,/ }; do
    case ",${installed#*-}," in *",$extra,"*) ;; *) up_to_date=0 ;; esac
  done
fi
if [ "$up_to_date" != 1 ]; then
  echo "bootstrap: installing rtindex[$extras] (editable)"
  .venv/bin/python -m pip install -q -e ".[$extras]"
  echo "$stamp" > .setup-stamp
fi
export PATH="$root/.venv/bin:$PATH"
