#!/usr/bin/env bash
# Used inside `docker build` only (docker/Dockerfile); not part of the image.
#
#   build-helper.sh deps PYPROJECT EXTRAS   pip install the project's dependencies (and
#                                           those of the comma-separated EXTRAS)
#   build-helper.sh package SRC             pip install cvtrain itself from SRC, no deps
#
# When the build context holds docker/certs/*.crt (copied to certs/ beside this script),
# pip trusts the system bundle plus those certificates, for this command only: the combined
# bundle lives in a temporary file and nothing about it is left in the image's environment.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

shopt -s nullglob
extra=("$here"/certs/*.crt)
if ((${#extra[@]})); then
    bundle=$(mktemp /tmp/ca-bundle.XXXXXX.pem)
    trap 'rm -f "$bundle"' EXIT
    system=/etc/ssl/certs/ca-certificates.crt
    [[ -f "$system" ]] || system=$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")')
    cat ${system:+"$system"} "${extra[@]}" >"$bundle"
    export PIP_CERT="$bundle" REQUESTS_CA_BUNDLE="$bundle" SSL_CERT_FILE="$bundle"
    echo "build-helper: trusting ${#extra[@]} extra CA file(s) from docker/certs/ for this step"
fi

pip() { python -m pip "$@"; }

case "$1" in
deps)
    req=$(mktemp /tmp/requirements.XXXXXX.txt)
    python - "$2" "${3:-}" >"$req" <<'PY'
import sys
import tomllib

project = tomllib.load(open(sys.argv[1], "rb"))["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[2].split(",")):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PY
    echo "build-helper: installing $(wc -l <"$req") requirements (extras: ${3:-none})"
    pip install --requirement "$req"
    rm -f "$req"
    ;;
package)
    pip install --no-deps "$2"
    # a base image may ship its own inconsistencies: report them, fail only on ours below
    pip check || echo "build-helper: warning: pip check found the problems above" >&2
    python -c "import cvtrain.cli, keras, tensorflow as tf; print('tensorflow', tf.__version__)"
    ;;
*)
    echo "usage: $0 deps PYPROJECT EXTRAS | package SRC" >&2
    exit 2
    ;;
esac
