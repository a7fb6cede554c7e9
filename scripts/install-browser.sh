#!/usr/bin/env bash
# Headless Chromium + ChromeDriver for the MLflow UI test (tests/integration/test_mlflow_ui.py),
# from Debian's packages. Installs only where they are missing and this is root on a Debian-like
# system (CI containers); elsewhere it says what to install and the UI test is skipped with that reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium and chromium-driver for the MLflow UI test"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
else
  echo "note: chromium/chromedriver not found; install Debian's chromium and chromium-driver to run the MLflow UI test" >&2
fi
