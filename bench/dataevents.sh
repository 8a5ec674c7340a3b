#!/usr/bin/env bash
# Times `encwatch replay` of a data-event trail (about one record in three a
# data event) with the data-event rules on against the same build with them
# off (the goal: on <= 1.3x off), alternating in each run, and optionally an
# older build with them on, so the change shows in one run.
#
#   bench/dataevents.sh [-m MB] [-r RUNS] [-s SEED] [-b OLD_REV]
#
# Prints each run, the medians with min-max, and checks that both settings
# and both builds raised the same findings. Needs GNU time.
set -euo pipefail
cd "$(dirname "$0")/.."

MB=200 RUNS=7 SEED=5 OLD=""
while getopts "m:r:s:b:" opt; do
  case $opt in
    m) MB=$OPTARG ;; r) RUNS=$OPTARG ;; s) SEED=$OPTARG ;; b) OLD=$OPTARG ;;
    *) sed -n '2,10p' "$0"; exit 2 ;;
  esac
done
command -v /usr/bin/time >/dev/null || { echo "bench: GNU time is required (apt-get install time)"; exit 1; }

OUT=bench/out
CORPUS=$OUT/data-corpus-$MB-$SEED
mkdir -p "$OUT"
echo "bench: building encwatch"
go build -trimpath -o "$OUT/encwatch" ./cmd/encwatch
if [[ -n $OLD ]]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$OLD"
  (cd "$tree" && go build -trimpath -o "$OLDPWD/$OUT/encwatch-old" ./cmd/encwatch)
  git worktree remove --force "$tree"
fi
if [[ ! -d $CORPUS/AWSLogs ]]; then
  echo "bench: generating a $MB MB data-event corpus (seed $SEED)"
  rm -rf "$CORPUS"
  go run ./fixtures/cmd/gencorpus -out "$CORPUS" -mb "$MB" -data-noise-every 3 -seed "$SEED"
fi
OFF=$OUT/data-rules-off.yaml
printf 'policy:\n  disabled: [object-encryption-override, directory-kms-copy-cost, object-encryption-rekeyed]\n' > "$OFF"
echo "bench: $(find "$CORPUS/AWSLogs" -name '*.json.gz' | wc -l) files; $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# measure CMD...: prints "seconds rss_kb". The wall time is bash's
# microsecond clock around the run (GNU time's %e has 10 ms steps, 4% of a
# run here); the RSS is GNU time's.
measure() {
  local log t0 t1; log=$(mktemp)
  t0=$EPOCHREALTIME
  /usr/bin/time -f '%M' -o "$log" "$@" >/dev/null 2>/dev/null
  t1=$EPOCHREALTIME
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", b - a}') $(cat "$log")"; rm -f "$log"
}
stats() { sort -n | awk '{a[NR]=$1} END {printf "%.3f (%.3f-%.3f)", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2, a[1], a[NR]}'; }

declare -a ON OFFT OLDT
for ((i = 1; i <= RUNS; i++)); do
  read -r on on_rss < <(measure "$OUT/encwatch" replay --quiet "$CORPUS/AWSLogs")
  read -r off _ < <(measure "$OUT/encwatch" replay --quiet --config "$OFF" "$CORPUS/AWSLogs")
  ON+=("$on"); OFFT+=("$off")
  line=$(printf 'run %d: rules on %.3fs (peak RSS %d MB)   rules off %.3fs' "$i" "$on" $((on_rss / 1024)) "$off")
  if [[ -n $OLD ]]; then
    read -r old _ < <(measure "$OUT/encwatch-old" replay --quiet "$CORPUS/AWSLogs")
    OLDT+=("$old"); line+=$(printf '   %s rules on %.3fs' "$OLD" "$old")
  fi
  echo "$line"
done
on_m=$(printf '%s\n' "${ON[@]}" | stats); off_m=$(printf '%s\n' "${OFFT[@]}" | stats)
echo "median (min-max): rules on $on_m s, rules off $off_m s"
awk -v a="${on_m%% *}" -v b="${off_m%% *}" 'BEGIN {printf "rules on / rules off: %.2fx (goal <= 1.3x)\n", a / b}'
if [[ -n $OLD ]]; then
  old_m=$(printf '%s\n' "${OLDT[@]}" | stats)
  echo "$OLD rules on: $old_m s"
fi
a=$("$OUT/encwatch" replay --quiet "$CORPUS/AWSLogs" | sha256sum)
b=$("$OUT/encwatch" replay --quiet --config "$OFF" "$CORPUS/AWSLogs" | grep -v -e object-encryption-override -e directory-kms-copy-cost -e object-encryption-rekeyed | sha256sum)
c=$("$OUT/encwatch" replay --quiet "$CORPUS/AWSLogs" | grep -v -e object-encryption-override -e directory-kms-copy-cost -e object-encryption-rekeyed | sha256sum)
[[ $b == "$c" ]] || { echo "bench: the findings of the other rules differ between the settings"; exit 1; }
if [[ -n $OLD ]]; then
  d=$("$OUT/encwatch-old" replay --quiet "$CORPUS/AWSLogs" | sha256sum)
  [[ $a == "$d" ]] || { echo "bench: $OLD and this build raise different findings"; exit 1; }
  echo "bench: same findings from $OLD and this build"
fi
