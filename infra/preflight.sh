#!/usr/bin/env bash
# Checks what `make install` cannot install into .venv: Python 3.11 and Java 17+ (for Spark).
set -u
py=${1:-python3.11}
if ! command -v "$py" >/dev/null 2>&1; then
  echo "error: $py was not found. batchloop needs Python 3.11 (set PYTHON=/path/to/python3.11)." >&2
  exit 1
fi
java_bin=java
[ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ] && java_bin="$JAVA_HOME/bin/java"
if ! command -v "$java_bin" >/dev/null 2>&1; then
  echo "error: Java was not found. Spark needs Java 17 or 21: install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME." >&2
  exit 1
fi
major=$("$java_bin" -version 2>&1 | head -n1 | sed -E 's/[^"]*"([0-9]+)[^"]*".*/\1/')
if ! [[ "$major" =~ ^[0-9]+$ ]] || [ "$major" -lt 17 ]; then
  echo "error: Java ${major:-unknown} found ($java_bin); Spark 4 needs Java 17 or 21. Install openjdk-17-jre-headless or set JAVA_HOME." >&2
  exit 1
fi
