#!/usr/bin/env bash
# Used inside `docker build` only (docker/Dockerfile); not part of the image.
#
#   build-helper.sh deps FLAVOR          pip install the third-party dependencies: jax, the
#                                        pinned requirements.txt beside this script (Keras
#                                        on JAX with CUDA), or pyproject.toml's
#                                        dependencies, TensorFlow coming from the base
#                                        (tensorflow)
#   build-helper.sh package FLAVOR SRC   pip install cvtrain itself from SRC, no deps, and
#                                        check that the flavor's backend imports
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
    case "$2" in
    jax)
        echo "build-helper: installing $(grep -c '==' "$here/requirements.txt") pinned requirements"
        pip install --no-deps --requirement "$here/requirements.txt"
        ;;
    tensorflow)
        req=$(mktemp /tmp/requirements.XXXXXX.txt)
        python -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
            "$here/pyproject.toml" >"$req"
        echo "build-helper: installing $(wc -l <"$req") requirements (TensorFlow from the base)"
        pip install --requirement "$req"
        rm -f "$req"
        ;;
    *) echo "build-helper: unknown flavor '$2' (expected jax or tensorflow)" >&2; exit 2 ;;
    esac
    ;;
package)
    pip install --no-deps "$3"
    if [[ "$2" == jax ]]; then
        # the lock is complete: any inconsistency is ours
        pip check
        python -c "import cvtrain.cli, keras, jax; from importlib.metadata import version as v
print('keras', keras.__version__, 'jax', jax.__version__, 'jax-cuda12-plugin', v('jax-cuda12-plugin'))"
    else
        # a base image may ship its own inconsistencies: report them, fail only on ours below
        pip check || echo "build-helper: warning: pip check found the problems above" >&2
        python -c "import cvtrain.cli, keras, tensorflow as tf; print('tensorflow', tf.__version__)"
    fi
    ;;
*)
    echo "usage: $0 deps FLAVOR | package FLAVOR SRC" >&2
    exit 2
    ;;
esac
