#!/usr/bin/env bash
# Debian packages the tests need beyond the virtual environment: Chromium and its driver
# for the browser test of the Airflow UI. Installs them with apt when they are missing.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then apt=(apt-get); elif command -v sudo >/dev/null 2>&1; then apt=(sudo apt-get);
else
  echo "error: the browser test needs ${missing[*]}: install them with apt (as root), e.g." >&2
  echo "  sudo apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt"
"${apt[@]}" update -qq
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
