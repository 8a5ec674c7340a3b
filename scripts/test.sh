#!/usr/bin/env bash
# Installs what the tests need, then runs them: gofmt, go vet, go mod
# verify, and go test -race over every package (fuzz seed corpora included).
# Debian packages are installed when missing and we are root (as in CI).
set -euo pipefail
cd "$(dirname "$0")/.."

# binary:package pairs the tests use; extend as tests need more.
DEBIAN_DEPS=("kcat:kcat" "prometheus:prometheus" "promtool:prometheus" "prometheus-alertmanager:prometheus-alertmanager" "amtool:prometheus-alertmanager" "chromium:chromium")
need_pkgs=()
for bin_pkg in "${DEBIAN_DEPS[@]}"; do
  bin=${bin_pkg%%:*}; pkg=${bin_pkg#*:}
  command -v "$bin" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if ((${#need_pkgs[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need_pkgs[*]}"
    apt-get update -qq
    mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "test.sh: ${need_pkgs[*]} not installed and cannot install (not root); tests that need them will skip (fail under CI=true)"
  fi
fi

go version
go mod download
go mod verify
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n $unformatted ]]; then
  echo "test.sh: not gofmt-ed:"; echo "$unformatted"; exit 1
fi
go vet ./...
go test -race -count=1 "$@" ./...
if [[ ${CI:-} == true ]]; then
  # Two minutes of the daemon under load: RSS, goroutines and descriptors
  # must stay flat (bench/soak.sh exits 1 when they grow).
  bash bench/soak.sh -d 120 -i 5
fi
