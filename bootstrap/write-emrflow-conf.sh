#!/usr/bin/env bash
# write-emrflow-conf.sh: EMR bootstrap action writing emrflow's configuration on every node.
#
# Purpose:   EMR refuses configuration classifications it does not know, so emrflow's
#            own `emrflow-conf` and `emrflow-log` classifications travel as arguments of
#            this bootstrap action (added by `emrflow create-cluster`), base64-encoded YAML.
# Arguments: --conf-b64 B64  content of emrflow-conf.yaml (the emrflow-conf Properties)
#            --log-b64 B64   content of logging.yaml (the emrflow-log Properties)
#            --dir DIR       configuration directory (default /etc/emrflow/conf)
# Defaults:  files /etc/emrflow/conf/emrflow-conf.yaml and /etc/emrflow/conf/logging.yaml,
#            mode 0644; the emrflow wrapper of install-emrflow.sh exports EMRFLOW_CONF_DIR.
# Testing:   EMRFLOW_BOOTSTRAP_ROOT=DIR makes the default directory DIR/etc/emrflow/conf (as
#            install-emrflow.sh does).
# Caveats:   the content is replaced, not merged: rerunning writes the same files again.
#            A bootstrap action's arguments are visible in DescribeCluster: put no secret here.
set -euo pipefail

CONF_B64=""
LOG_B64=""
DIR="${EMRFLOW_BOOTSTRAP_ROOT:-}/etc/emrflow/conf"
while [ $# -gt 0 ]; do
  case "$1" in
    --conf-b64) CONF_B64="${2:?--conf-b64 needs a value}"; shift 2 ;;
    --log-b64)  LOG_B64="${2:?--log-b64 needs a value}"; shift 2 ;;
    --dir)      DIR="${2:?--dir needs a value}"; shift 2 ;;
    *) echo "write-emrflow-conf: unknown argument $1 (expected --conf-b64, --log-b64, --dir)" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" -ne 0 ] && [ ! -w "$(dirname "$DIR")" ]; then SUDO="sudo"; fi
$SUDO mkdir -p "$DIR"

write() {  # write <base64> <file>: decode to a temporary file, then move it in place
  local tmp
  tmp="$(mktemp)"
  printf '%s' "$1" | base64 -d >"$tmp"
  $SUDO install -m 0644 "$tmp" "$2"
  rm -f "$tmp"
  echo "write-emrflow-conf: wrote $2" >&2
}

if [ -n "$CONF_B64" ]; then write "$CONF_B64" "$DIR/emrflow-conf.yaml"; fi
if [ -n "$LOG_B64" ]; then write "$LOG_B64" "$DIR/logging.yaml"; fi
