#!/usr/bin/env bash
# Install what tests/e2e/run.sh needs on a fresh Debian 12 machine (as root).
# Idempotent: safe to run again. No Docker daemon is needed or used.
#
#   tests/e2e/install.sh
#
# Environment:
#   WHARF_E2E_VENV   python venv for oras-py and docker-registry-client-async (default ~/.cache/wharf-e2e-venv)
#   WHARF_E2E_SKIP_APT=1   skip apt (packages already there)
#
# Nothing under /etc is edited: run.sh writes its own storage.conf,
# registries.conf, containers.conf and policy.json into its temp dir
# (vfs storage driver, chroot isolation), so buildah/podman never touch
# the host's container storage.
set -euo pipefail

venv=${WHARF_E2E_VENV:-$HOME/.cache/wharf-e2e-venv}
oras_spec=${WHARF_E2E_ORAS_SPEC:-oras>=0.2,<0.3}
# WebDriver client for ui.sh (drives Debian's chromium through chromedriver).
selenium_spec=${WHARF_E2E_SELENIUM_SPEC:-selenium>=4.11,<5}
# An asyncio registry client (PyPI) that needs absolute Location headers:
# scenario drca-push-pull in run.sh.
drca_version=1.0.3

packages=(
    skopeo buildah podman umoci jq curl ca-certificates openssl
    python3 python3-venv
    apache2-utils    # htpasswd, to cross-check bcrypt hashes with auth-scenarios.sh
    docker-registry  # the reference registry, for with-reference.sh
    busybox-static   # the one binary of the FROM scratch image docker.sh builds
    systemd          # systemd-analyze, which checks dist/wharf.service (crates/wharf/tests/dist.rs)
    binutils         # strip and readelf, for dist/build-image.sh
    containerd       # ctr and a private containerd, for mirror.sh (hosts.toml, ?ns=)
    chromium chromium-driver  # headless Chromium over WebDriver, for ui.sh (the web UI)
)

if [[ -z ${WHARF_E2E_SKIP_APT:-} ]]; then
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]})); then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y "${missing[@]}"
    fi
    # Debian's docker-registry package starts a service (on :5000) where
    # systemd runs; the suite starts its own instance, so stop that one.
    if [[ -d /run/systemd/system ]] && systemctl is-enabled --quiet docker-registry 2>/dev/null; then
        systemctl disable --now docker-registry || true
    fi
fi

# Use Debian's python for the venv (python3-venv is installed for it), even
# when another python3 (pyenv, ...) comes first on PATH.
py=/usr/bin/python3
[[ -x $py ]] || py=$(command -v python3)

if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
fi
if ! "$venv/bin/python" - "$oras_spec" <<'EOF' 2>/dev/null; then
import sys
from importlib.metadata import version
v = version("oras")
sys.exit(0 if v.startswith("0.2.") else 1)
EOF
    "$venv/bin/pip" install --disable-pip-version-check -q "$oras_spec"
fi
if ! "$venv/bin/python" - "$drca_version" <<'EOF' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(0 if version("docker-registry-client-async") == sys.argv[1] else 1)
EOF
    "$venv/bin/pip" install --disable-pip-version-check -q "docker-registry-client-async==$drca_version"
fi

if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
    "$venv/bin/pip" install --disable-pip-version-check -q "$selenium_spec"
fi

echo "install: skopeo $(skopeo --version | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}')," \
    "podman $(podman --version | awk '{print $3}'), umoci $(umoci --version | awk '{print $3}')," \
    "oras-py $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("oras"))')," \
    "docker-registry-client-async $("$venv/bin/python" -c 'from importlib.metadata import version; print(version("docker-registry-client-async"))')"
