#!/usr/bin/env bash
# install-emrflow.sh: EMR bootstrap action installing the emrflow wheel on every node.
#
# Purpose:   copy the emrflow wheel from S3, install it (with its dependencies) into a
#            dedicated virtual environment and put an `emrflow` command on the PATH, so
#            command-runner.jar steps can run `emrflow run -t yarn-per-job s3://.../job.py`.
# Arguments: $1  S3 URI of the wheel, e.g. s3://bucket/emrflow/wheels/emrflow-0.1.0-py3-none-any.whl
#            $2  optional: install directory (default /opt/emrflow)
#            $3  optional: python interpreter (default python3; needs >= 3.10)
# Defaults:  venv /opt/emrflow/venv, command /usr/local/bin/emrflow (and /usr/bin/emrflow),
#            configuration directory /etc/emrflow/conf (see write-emrflow-conf.sh).
# Caveats:   runs as the hadoop user before applications are installed; uses sudo for
#            system paths. Needs outbound access to the Python package index for the
#            dependencies (or a mirror configured in /etc/pip.conf). Rerunnable: an existing
#            venv is reused and the wheel reinstalled (--force-reinstall --no-deps for emrflow).
set -euo pipefail

WHEEL_URI="${1:?usage: install-emrflow.sh s3://bucket/path/emrflow-X.Y.Z-py3-none-any.whl [install dir] [python]}"
PREFIX="${2:-/opt/emrflow}"
PYTHON="${3:-python3}"
CONF_DIR=/etc/emrflow/conf

log() { echo "install-emrflow: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' || {
  log "$PYTHON is older than 3.10; install python3.11 (dnf install -y python3.11) and pass it as \$3"
  exit 1
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
WHEEL="$WORK/$(basename "$WHEEL_URI")"
log "copying $WHEEL_URI"
aws s3 cp --only-show-errors "$WHEEL_URI" "$WHEEL"

$SUDO mkdir -p "$PREFIX" "$CONF_DIR"
$SUDO chown "$(id -u):$(id -g)" "$PREFIX"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
  log "creating $PREFIX/venv"
  "$PYTHON" -m venv "$PREFIX/venv"
fi
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/venv/bin/python" -m pip install --quiet "$WHEEL" boto3
"$PREFIX/venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$WHEEL"

# a wrapper rather than a symlink: it points emrflow at the cluster's configuration
$SUDO tee /usr/local/bin/emrflow >/dev/null <<WRAPPER
#!/usr/bin/env bash
export EMRFLOW_CONF_DIR="\${EMRFLOW_CONF_DIR:-$CONF_DIR}"
exec "$PREFIX/venv/bin/emrflow" "\$@"
WRAPPER
$SUDO chmod 0755 /usr/local/bin/emrflow
$SUDO ln -sf /usr/local/bin/emrflow /usr/bin/emrflow
log "installed $("$PREFIX/venv/bin/emrflow" --version)"
