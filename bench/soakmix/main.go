// Command soakmix soaks `encwatch run` with a realistic mix for a long run
// (by hand, not in CI): an organisation trail announcing a new log file
// over SQS every few seconds (S3 and SQS emulators), a webhook that fails
// 5% of requests, and a policy reload every 10 minutes. It samples the
// daemon's RSS, goroutines, open descriptors and state file, prints the
// table, and says whether they stayed flat (exit 1 when one grew).
//
//	go build -o BIN ./cmd/encwatch
//	go run ./bench/soakmix -bin BIN -d 2h -i 1m
package main

import (
	"bytes"
	"compress/gzip"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/encwatch/encwatch/fixtures/awsemu"
)

func main() {
	bin := flag.String("bin", "", "the encwatch binary")
	dur := flag.Duration("d", 2*time.Hour, "how long")
	every := flag.Duration("i", time.Minute, "sample interval")
	fileEvery := flag.Duration("files", 3*time.Second, "a new trail file this often")
	reloadEvery := flag.Duration("reload", 10*time.Minute, "rewrite the policy this often")
	flag.Parse()
	if *bin == "" {
		flag.Usage()
		os.Exit(2)
	}
	dir, _ := os.MkdirTemp("", "encwatch-soakmix-")
	defer os.RemoveAll(dir)

	w := awsemu.NewWorld()
	w.SQS.Delay = 0
	emu := httptest.NewServer(w)
	defer emu.Close()
	var posts, failed atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if rand.IntN(100) < 5 {
			failed.Add(1)
			http.Error(rw, "unavailable", http.StatusServiceUnavailable)
			return
		}
		posts.Add(1)
	}))
	defer hook.Close()

	records, _ := filepath.Glob("fixtures/records/*.json")
	var recs [][]byte
	for _, p := range records {
		b, _ := os.ReadFile(p)
		recs = append(recs, b)
	}
	idRe := regexp.MustCompile(`"eventID"\s*:\s*"[^"]*"`)
	stop := make(chan struct{})
	go func() { // the trail: a new gzip log file every fileEvery, announced over SQS
		t := time.NewTicker(*fileEvery)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			var out [][]byte
			for k := range 20 {
				r := recs[rand.IntN(len(recs))]
				r, _ = awsemu.Retime(r, time.Now().Add(-time.Duration(rand.IntN(300))*time.Second))
				r = idRe.ReplaceAll(r, []byte(fmt.Sprintf(`"eventID":"soak-%d-%d"`, n, k)))
				out = append(out, r)
			}
			var gz bytes.Buffer
			zw := gzip.NewWriter(&gz)
			zw.Write([]byte(`{"Records":[` + string(bytes.Join(out, []byte(","))) + `]}`))
			zw.Close()
			key := fmt.Sprintf("AWSLogs/111122223333/CloudTrail/us-east-1/%s/111122223333_CloudTrail_us-east-1_%d.json.gz", time.Now().UTC().Format("2006/01/02"), n)
			w.S3.Put("org-trail", key, gz.Bytes())
			w.SQS.Send(`{"s3Bucket":"org-trail","s3ObjectKey":["` + key + `"]}`)
		}
	}()

	cfg := filepath.Join(dir, "encwatch.yaml")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	port := ln.Addr().String()
	ln.Close()
	writeCfg := func(sev string) {
		os.WriteFile(cfg, []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: %q}
log: {level: warn}
reload: {watch: true, interval: 5s}
sources:
  sqs: {queueURL: %q, workers: 2, waitTime: 1s}
sinks:
  webhooks: [{name: soak, url: %q, secretEnv: SOAK_HMAC}]
policy:
  severity: {bucket-key-disabled: %s}
`, filepath.Join(dir, "state"), port, emu.URL+"/111122223333/trail-logs", hook.URL, sev)), 0o600)
	}
	writeCfg("low")
	cmd := exec.Command(*bin, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "SOAK_HMAC=soak", "AWS_ENDPOINT_URL_SQS="+emu.URL, "AWS_ENDPOINT_URL_S3="+emu.URL, "AWS_ACCESS_KEY_ID=x",
		"AWS_SECRET_ACCESS_KEY=y", "AWS_REGION=us-east-1", "AWS_CA_BUNDLE=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true")
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer cmd.Process.Kill()
	metric := func(name string) float64 {
		resp, err := http.Get("http://" + port + "/metrics")
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		sum := 0.0
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.HasPrefix(l, name+" ") || strings.HasPrefix(l, name+"{") {
				f := strings.Fields(l)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				sum += v
			}
		}
		return sum
	}
	fmt.Printf("%8s %8s %10s %5s %10s %8s %8s %7s\n", "minutes", "rss_mb", "goroutines", "fds", "bbolt_kb", "alerts", "refused", "reloads")
	type row struct{ rss, gor, fds, db float64 }
	var rows []row
	start := time.Now()
	lastReload, sev := start, "low"
	for {
		time.Sleep(*every)
		if cmd.ProcessState != nil || cmd.Process.Signal(syscall.Signal(0)) != nil {
			fmt.Println("soakmix: the daemon died\n" + logs.String())
			os.Exit(1)
		}
		if time.Since(lastReload) >= *reloadEvery {
			sev = map[string]string{"low": "info", "info": "low"}[sev]
			writeCfg(sev)
			lastReload = time.Now()
		}
		status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
		var rss float64
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
				rss = kb / 1024
			}
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
		st, _ := os.Stat(filepath.Join(dir, "state", "encwatch.db"))
		var db float64
		if st != nil {
			db = float64(st.Size()) / 1024
		}
		r := row{rss, metric("go_goroutines"), float64(len(fds)), db}
		rows = append(rows, r)
		fmt.Printf("%8.1f %8.1f %10.0f %5.0f %10.0f %8.0f %8d %7.0f\n", time.Since(start).Minutes(), r.rss, r.gor, r.fds, r.db,
			metric("encwatch_alerts_sent_total"), failed.Load(), metric(`encwatch_config_reloads_total`))
		if time.Since(start) >= *dur {
			break
		}
	}
	close(stop)
	n := len(rows)
	if n < 6 {
		fmt.Println("soakmix: too few samples for a verdict")
		return
	}
	avg := func(rs []row, f func(row) float64) float64 {
		s := 0.0
		for _, r := range rs {
			s += f(r)
		}
		return s / float64(len(rs))
	}
	mid, last := rows[n/3:2*n/3], rows[2*n/3:]
	bad := false
	for _, c := range []struct {
		name      string
		f         func(row) float64
		tol, slop float64
	}{
		{"rss_mb", func(r row) float64 { return r.rss }, 0.10, 5}, {"goroutines", func(r row) float64 { return r.gor }, 0.10, 10},
		{"fds", func(r row) float64 { return r.fds }, 0.10, 2}, {"bbolt_kb", func(r row) float64 { return r.db }, 0.25, 512},
	} {
		a, b := avg(mid, c.f), avg(last, c.f)
		grow := 0.0
		if a > 0 {
			grow = (b - a) / a
		}
		g := grow > c.tol && b-a > c.slop
		bad = bad || g
		verdict := "flat"
		if g {
			verdict = "GROWING"
		}
		fmt.Printf("soakmix: %-10s middle %9.1f  last %9.1f  %+5.1f%%  %s\n", c.name, a, b, grow*100, verdict)
	}
	fmt.Printf("soakmix: %d alerts accepted by the webhook, %d requests refused (5%%), over %s\n", posts.Load(), failed.Load(), time.Since(start).Round(time.Second))
	if bad {
		os.Exit(1)
	}
}
