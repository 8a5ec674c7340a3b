#!/usr/bin/env bash
# Soak test: runs `encwatch demo` (emulated CloudTrail with new encryption
# changes every 50 ms, Kafka and a webhook) for a while and samples the
# daemon's RSS, goroutines, open file descriptors and bbolt file size. It
# prints a table and a verdict: flat, or growing (exit 1).
#
#   bench/soak.sh [-d SECONDS] [-i SAMPLE_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=120 INTERVAL=5
while getopts "d:i:" opt; do
  case $opt in d) DURATION=$OPTARG ;; i) INTERVAL=$OPTARG ;; *) sed -n '2,8p' "$0"; exit 2 ;; esac
done
OUT=$(mktemp -d)
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$OUT"' EXIT
go build -trimpath -o "$OUT/encwatch" ./cmd/encwatch
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$OUT/encwatch" demo --listen "127.0.0.1:$PORT" --every 50ms --state "$OUT/state" >"$OUT/alerts.txt" 2>"$OUT/stderr.txt" &
PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
metric() { curl -sf "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%d", s}'; }
printf '%8s %8s %10s %5s %10s %8s\n' seconds rss_mb goroutines fds bbolt_kb alerts | tee "$OUT/table.txt"
start=$(date +%s)
while :; do
  now=$(( $(date +%s) - start ))
  kill -0 "$PID" 2>/dev/null || { echo "soak: the daemon died"; cat "$OUT/stderr.txt"; exit 1; }
  rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$PID/status)
  fds=$(ls /proc/$PID/fd | wc -l)
  db=$(( $(stat -c %s "$OUT/state/encwatch.db" 2>/dev/null || echo 0) / 1024 ))
  printf '%8d %8s %10s %5d %10d %8s\n' "$now" "$rss" "$(metric go_goroutines)" "$fds" "$db" "$(metric encwatch_alerts_sent_total)" | tee -a "$OUT/table.txt"
  (( now >= DURATION )) && break
  sleep "$INTERVAL"
done
# Verdict: compare the middle third of the samples with the last third
# (the first third is warm-up).
python3 - "$OUT/table.txt" <<'PY'
import sys
rows=[l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
n=len(rows)
if n < 6:
    print("soak: too few samples for a verdict"); sys.exit(0)
mid=rows[n//3:2*n//3]; last=rows[2*n//3:]
avg=lambda rs,i: sum(float(r[i]) for r in rs)/len(rs)
verdict=[]
for name,i,tol in (("rss_mb",1,0.10),("goroutines",2,0.10),("fds",3,0.10)):
    a,b=avg(mid,i),avg(last,i)
    grow=(b-a)/a if a else 0
    verdict.append((name,a,b,grow,grow>tol and (b-a)>(2 if name!="rss_mb" else 5)))
for name,a,b,g,bad in verdict:
    print(f"soak: {name:10s} middle {a:9.1f}  last {b:9.1f}  {g*100:+5.1f}%  {'GROWING' if bad else 'flat'}")
alerts=int(rows[-1][5])
print(f"soak: {alerts} alerts delivered in {rows[-1][0]} s")
sys.exit(1 if any(v[4] for v in verdict) or alerts==0 else 0)
PY
