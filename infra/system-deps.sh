#!/usr/bin/env bash
# Debian packages beyond the virtual environment, installed with apt when they are missing:
#   stack    PostgreSQL's server (the local stack's database: Airflow's and MLflow's)
#   browser  Chromium and its driver (the browser test of the Airflow UI)
#   jvm      Maven (fetches the Spark jars of infra/jars/pom.xml from Maven Central)
# Usage: infra/system-deps.sh stack [browser] [jvm]
set -euo pipefail
missing=()
for group in "$@"; do
  case "$group" in
    stack)
      if [ -z "${BATCHLOOP_POSTGRES_BIN:-}" ] && ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
        missing+=(postgresql)
      fi ;;
    browser)
      command -v chromium >/dev/null 2>&1 || missing+=(chromium)
      command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver) ;;
    jvm)
      command -v mvn >/dev/null 2>&1 || missing+=(maven) ;;
    *) echo "system-deps.sh: unknown group $group (stack, browser, jvm)" >&2; exit 2 ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ]; then apt=(apt-get); elif command -v sudo >/dev/null 2>&1; then apt=(sudo apt-get);
else
  echo "error: batchloop needs the Debian packages ${missing[*]}: install them with apt (as root), e.g." >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "installing ${missing[*]} with apt"
"${apt[@]}" update -qq
# the postgresql package would start a cluster of its own on port 5432: the stack runs its own server instead
if [[ " ${missing[*]} " == *" postgresql "* ]] && [ "$(id -u)" -eq 0 ] && [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
