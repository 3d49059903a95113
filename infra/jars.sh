#!/usr/bin/env bash
# The JVM jars of infra/jars/pom.xml (the s3a connector, the S3A committers' binding, PostgreSQL's JDBC
# driver) copied from Maven Central into a folder of the virtual environment. Maven caches what it
# downloads in ~/.m2, so a second install (a fresh clone too) downloads nothing.
# Usage: infra/jars.sh DEST
set -euo pipefail
dest=$(realpath -m "$1")
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v mvn >/dev/null 2>&1; then
  "$here/system-deps.sh" jvm
fi
tmp="$dest.partial"
rm -rf "$tmp"
mvn -q -B -Dstyle.color=never -f "$here/jars/pom.xml" dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp"
rm -rf "$dest"
mv "$tmp" "$dest"
echo "spark jars: $(ls "$dest" | tr '\n' ' ')"
