#!/usr/bin/env bash
# System packages the tests and the demo need, from Debian, installed only when missing:
#   - a JDK and Maven: the local Apache Kafka (streamproc/kafka/local_kafka.py) runs on Java, its jars come from
#     Maven Central through deploy/kafka/pom.xml;
#   - openssl: the TLS tests make their certificates with it;
#   - prometheus (with promtool): a real Prometheus server scrapes the pipeline in the tests.
set -euo pipefail
missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v openssl >/dev/null || missing+=(openssl)
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  missing+=(prometheus)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "installing from Debian: ${missing[*]}"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The prometheus package may start its own service; the tests start their own instances.
$SUDO service prometheus stop >/dev/null 2>&1 || true
command -v java >/dev/null && command -v mvn >/dev/null && command -v promtool >/dev/null
