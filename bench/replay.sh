#!/usr/bin/env bash
# Times `encwatch replay` against `zcat` (the decompression floor) and the
# jq pipeline a user would otherwise write, on the same generated corpus.
#
#   bench/replay.sh [-m MB] [-r RUNS] [-j JQ_RUNS] [-s SEED]
#
# Prints each run, the medians, peak RSS (from /usr/bin/time -v) and the
# ratios, and checks that replay raised exactly the findings the generator
# declared. Needs gzip (zcat), GNU time; jq is optional.
set -euo pipefail
cd "$(dirname "$0")/.."

MB=1024 RUNS=5 JQ_RUNS=1 SEED=1
while getopts "m:r:j:s:" opt; do
  case $opt in
    m) MB=$OPTARG ;; r) RUNS=$OPTARG ;; j) JQ_RUNS=$OPTARG ;; s) SEED=$OPTARG ;;
    *) sed -n '2,11p' "$0"; exit 2 ;;
  esac
done
for bin in zcat /usr/bin/time; do
  command -v "$bin" >/dev/null || { echo "bench: $bin is required (apt-get install gzip time)"; exit 1; }
done

OUT=bench/out
CORPUS=$OUT/corpus-$MB-$SEED
mkdir -p "$OUT"
echo "bench: building encwatch"
go build -trimpath -o "$OUT/encwatch" ./cmd/encwatch
if [[ ! -f $CORPUS/expected.json ]]; then
  echo "bench: generating $MB MB corpus (seed $SEED)"
  rm -rf "$CORPUS"
  go run ./fixtures/cmd/gencorpus -out "$CORPUS" -mb "$MB" -seed "$SEED"
fi
mapfile -t FILES < <(find "$CORPUS/AWSLogs" -name '*.json.gz' | sort)
gz_bytes=$(cat "${FILES[@]}" | wc -c)
want=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['findings']))" "$CORPUS/expected.json" 2>/dev/null ||
       grep -c '"eventID"' "$CORPUS/expected.json")
echo "bench: ${#FILES[@]} files, $((gz_bytes / 1000000)) MB gzip; $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

# measure NAME CMD...: runs CMD under GNU time, appends "seconds rss_kb".
measure() {
  local log; log=$(mktemp)
  /usr/bin/time -v -o "$log" "$@" >/dev/null 2>>"$OUT/stderr.log"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log" | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$log")
  rm -f "$log"
  echo "$wall $rss"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

: > "$OUT/stderr.log"
declare -a ZT RT RR
for ((i = 1; i <= RUNS; i++)); do
  read -r zt _ < <(measure zcat "${FILES[@]}")
  read -r rt rr < <(measure "$OUT/encwatch" replay --format json --quiet "$CORPUS/AWSLogs")
  ZT+=("$zt"); RT+=("$rt"); RR+=("$rr")
  printf 'run %d: zcat %6.2fs   encwatch replay %6.2fs (peak RSS %d MB)\n' "$i" "$zt" "$rt" $((rr / 1024))
done
got=$("$OUT/encwatch" replay --format json --quiet "$CORPUS/AWSLogs" | wc -l)
zm=$(printf '%s\n' "${ZT[@]}" | median)
rm_=$(printf '%s\n' "${RT[@]}" | median)
rssm=$(printf '%s\n' "${RR[@]}" | sort -n | tail -1)
echo
printf 'median zcat            %6.2fs\n' "$zm"
printf 'median encwatch replay %6.2fs   ratio %.2fx of zcat   peak RSS %d MB\n' "$rm_" "$(echo "$rm_ / $zm" | bc -l)" $((rssm / 1024))
if command -v jq >/dev/null && ((JQ_RUNS > 0)); then
  declare -a JT
  for ((i = 1; i <= JQ_RUNS; i++)); do
    read -r jt _ < <(measure bash -c 'zcat "$@" | jq -c ".Records[] | select(.eventName|test(\"BucketEncryption\"))"' _ "${FILES[@]}")
    JT+=("$jt")
  done
  jm=$(printf '%s\n' "${JT[@]}" | median)
  printf 'median zcat | jq        %6.2fs   encwatch is %.1fx faster\n' "$jm" "$(echo "$jm / $rm_" | bc -l)"
fi
echo "findings: replay raised $got, the generator declared $want"
[[ $got == "$want" ]] || { echo "bench: FINDINGS DIFFER"; exit 1; }
