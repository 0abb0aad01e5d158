#!/usr/bin/env bash
# install-emrflow.sh: EMR bootstrap action installing the emrflow wheel on every node.
#
# Purpose:   copy the emrflow wheel from S3, install it (with its dependencies) into a
#            dedicated virtual environment and put an `emrflow` command on the PATH, so
#            command-runner.jar steps can run `emrflow run -t yarn-per-job s3://.../job.py`.
# Arguments: $1  S3 URI of the wheel, e.g. s3://bucket/emrflow/staging/wheels/<sha256
#                prefix>/emrflow-0.1.0-py3-none-any.whl (emrflow stages itself there), or a
#                requirement such as emrflow==0.1.0, installed from the package index
#                (`--wheel index`)
#            $2  optional: install directory (default /opt/emrflow)
#            $3  optional: python interpreter (needs >= 3.10; default: the first of python3,
#                python3.12, python3.11 that is >= 3.10, else python3.11 installed with dnf,
#                since Amazon Linux 2023 (EMR 7) has python3 3.9)
# Defaults:  venv /opt/emrflow/venv, command /usr/local/bin/emrflow (and /usr/bin/emrflow),
#            configuration directory /etc/emrflow/conf (see write-emrflow-conf.sh); the
#            command's wrapper exports EMRFLOW_CONF_DIR and, from logging.yaml's root.level,
#            EMRFLOW_LOG_LEVEL (unless already set).
# Testing:   EMRFLOW_BOOTSTRAP_ROOT=DIR puts every path above under DIR (DIR/opt/emrflow,
#            DIR/etc/emrflow/conf, DIR/usr/local/bin, DIR/usr/bin), so the test suite runs this
#            script unchanged without touching the machine's system directories.
# Caveats:   runs as the hadoop user before applications are installed; uses sudo for
#            system paths. Needs outbound access to the Python package index for the
#            dependencies (or a mirror configured in /etc/pip.conf). Rerunnable: an existing
#            venv is reused and the wheel reinstalled (--force-reinstall --no-deps for emrflow).
set -euo pipefail

WHEEL_URI="${1:?usage: install-emrflow.sh s3://bucket/path/emrflow-X.Y.Z-py3-none-any.whl|emrflow==X.Y.Z [install dir] [python]}"
ROOT="${EMRFLOW_BOOTSTRAP_ROOT:-}"
PREFIX="${2:-$ROOT/opt/emrflow}"
PYTHON="${3:-}"
CONF_DIR="$ROOT/etc/emrflow/conf"
BIN_DIR="$ROOT/usr/local/bin"

log() { echo "install-emrflow: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && [ -z "$ROOT" ]; then SUDO="sudo"; fi

recent() { command -v "$1" >/dev/null 2>&1 && "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; }
if [ -z "$PYTHON" ]; then
  for candidate in python3 python3.12 python3.11; do
    if recent "$candidate"; then PYTHON="$candidate"; break; fi
  done
  if [ -z "$PYTHON" ] && command -v dnf >/dev/null 2>&1; then
    log "python3 is older than 3.10: installing python3.11 with dnf"
    $SUDO dnf install -y -q python3.11 >&2 && PYTHON=python3.11
  fi
  PYTHON="${PYTHON:-python3}"
fi
recent "$PYTHON" || {
  log "$PYTHON is missing or older than 3.10; install python3.11 (dnf install -y python3.11) and pass it as \$3"
  exit 1
}

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
if [[ "$WHEEL_URI" == s3://* ]]; then
  WHEEL="$WORK/$(basename "$WHEEL_URI")"
  log "copying $WHEEL_URI"
  aws s3 cp --only-show-errors "$WHEEL_URI" "$WHEEL"
else
  WHEEL="$WHEEL_URI"          # a requirement: pip takes it from the package index
  log "installing $WHEEL from the package index"
fi

$SUDO mkdir -p "$PREFIX" "$CONF_DIR" "$BIN_DIR" "$ROOT/usr/bin"
$SUDO chown "$(id -u):$(id -g)" "$PREFIX"
if [ ! -x "$PREFIX/venv/bin/python" ]; then
  log "creating $PREFIX/venv"
  "$PYTHON" -m venv "$PREFIX/venv"
fi
"$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
"$PREFIX/venv/bin/python" -m pip install --quiet "$WHEEL" boto3
"$PREFIX/venv/bin/python" -m pip install --quiet --force-reinstall --no-deps "$WHEEL"

# a wrapper rather than a symlink: it points emrflow at the cluster's configuration
$SUDO tee "$BIN_DIR/emrflow" >/dev/null <<WRAPPER
#!/usr/bin/env bash
export EMRFLOW_CONF_DIR="\${EMRFLOW_CONF_DIR:-$CONF_DIR}"
# the emrflow-log classification (logging.yaml, root.level) sets the log level
if [ -z "\${EMRFLOW_LOG_LEVEL:-}" ] && [ -f "\$EMRFLOW_CONF_DIR/logging.yaml" ]; then
  level="\$(sed -n 's/^root\.level:[[:space:]]*//p' "\$EMRFLOW_CONF_DIR/logging.yaml" | tr -d "'\\"" | head -n 1)"
  if [ -n "\$level" ]; then export EMRFLOW_LOG_LEVEL="\$level"; fi
fi
exec "$PREFIX/venv/bin/emrflow" "\$@"
WRAPPER
$SUDO chmod 0755 "$BIN_DIR/emrflow"
$SUDO ln -sf "$BIN_DIR/emrflow" "$ROOT/usr/bin/emrflow"
log "installed $("$PREFIX/venv/bin/emrflow" --version)"
