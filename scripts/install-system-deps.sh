#!/usr/bin/env bash
# System packages the tests need: a real Prometheus server and promtool (Debian package "prometheus").
set -euo pipefail
if command -v prometheus >/dev/null && command -v promtool >/dev/null; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package may start its own service; the tests start their own instances.
$SUDO service prometheus stop >/dev/null 2>&1 || true
command -v promtool >/dev/null
