#!/usr/bin/env bash
# Soak test: runs `encwatch run` against the CloudTrail emulator in its
# generator mode (a new encryption event every 25 ms, some late) with a
# webhook sink, and samples the daemon's RSS, goroutines, open file
# descriptors and bbolt file size. It prints a table and a verdict: flat,
# or growing (exit 1).
#
#   bench/soak.sh [-d SECONDS] [-i SAMPLE_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=120 INTERVAL=5
while getopts "d:i:" opt; do
  case $opt in d) DURATION=$OPTARG ;; i) INTERVAL=$OPTARG ;; *) sed -n '2,9p' "$0"; exit 2 ;; esac
done
OUT=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$OUT"' EXIT
go build -trimpath -o "$OUT/encwatch" ./cmd/encwatch
go build -o "$OUT/awsemu" ./fixtures/cmd/awsemu
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EMU=$(port) HTTP=$(port)
"$OUT/awsemu" -listen "127.0.0.1:$EMU" -spread 0 -generate 25ms -keep 30m fixtures/records/*.json fixtures/records/*.jsonl 2>"$OUT/emu.txt" &
PIDS+=($!)
cat >"$OUT/encwatch.yaml" <<YAML
state: {dir: "$OUT/state"}
http: {listen: "127.0.0.1:$HTTP"}
log: {level: warn}
sources:
  lookup: {regions: [us-east-1], interval: 1s, overlap: 5m, startFrom: 1h}
sinks:
  webhooks: [{name: soak, url: "http://127.0.0.1:$EMU/hook", secretEnv: SOAK_HMAC}]
YAML
for _ in $(seq 50); do curl -s "http://127.0.0.1:$EMU/" >/dev/null 2>&1 && break; sleep 0.2; done
SOAK_HMAC=soak AWS_ENDPOINT_URL_CLOUDTRAIL="http://127.0.0.1:$EMU" AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=y AWS_REGION=us-east-1 \
  AWS_CA_BUNDLE= AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
  "$OUT/encwatch" run --config "$OUT/encwatch.yaml" >/dev/null 2>"$OUT/daemon.txt" &
PID=$!
PIDS+=($PID)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$HTTP/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
metric() { curl -sf "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%d", s}'; }
printf '%8s %8s %10s %5s %10s %8s\n' seconds rss_mb goroutines fds bbolt_kb alerts | tee "$OUT/table.txt"
start=$(date +%s)
while :; do
  now=$(( $(date +%s) - start ))
  kill -0 "$PID" 2>/dev/null || { echo "soak: the daemon died"; cat "$OUT/daemon.txt"; exit 1; }
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$PID/status)
  fds=$(ls /proc/$PID/fd | wc -l)
  db=$(( $(stat -c %s "$OUT/state/encwatch.db" 2>/dev/null || echo 0) / 1024 ))
  printf '%8d %8s %10s %5d %10d %8s\n' "$now" "$rss" "$(metric go_goroutines)" "$fds" "$db" "$(metric encwatch_alerts_sent_total)" | tee -a "$OUT/table.txt"
  (( now >= DURATION )) && break
  sleep "$INTERVAL"
done
# Verdict: the middle third of the samples against the last third (the
# first third is warm-up: the 5-minute LookupEvents overlap window fills).
python3 - "$OUT/table.txt" <<'PY'
import sys
rows=[l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
n=len(rows)
if n < 6:
    print("soak: too few samples for a verdict"); sys.exit(0)
mid=rows[n//3:2*n//3]; last=rows[2*n//3:]
avg=lambda rs,i: sum(float(r[i]) for r in rs)/len(rs)
bad=False
for name,i,tol,slack in (("rss_mb",1,0.10,5),("goroutines",2,0.10,2),("fds",3,0.10,2)):
    a,b=avg(mid,i),avg(last,i)
    grow=(b-a)/a if a else 0
    g = grow>tol and (b-a)>slack
    bad |= g
    print(f"soak: {name:10s} middle {a:9.1f}  last {b:9.1f}  {grow*100:+5.1f}%  {'GROWING' if g else 'flat'}")
alerts=int(rows[-1][5])
print(f"soak: {alerts} alerts delivered in {rows[-1][0]} s; verdict: {'growing' if bad else 'flat'}")
sys.exit(1 if bad or alerts==0 else 0)
PY
