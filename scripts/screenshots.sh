#!/usr/bin/env bash
# Screenshots of the web UI for the README (docs/*.png), taken by the web UI's
# end-to-end test in a real headless Chromium against real daemons on 127.0.0.1.
# Needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
OPM_SCREENSHOTS="$PWD/docs" cargo test --locked --test it web_ui -- --test-threads=1
for shot in processes process agent agents events; do
  if [ ! docs/$shot.png -nt "$stamp" ]; then
    echo "docs/$shot.png was not taken: is chromium/chromedriver installed?" >&2
    exit 1
  fi
done
ls -l docs/*.png
