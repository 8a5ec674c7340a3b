// Command burst measures how fast encwatch moves a burst of alerts from
// trail files to a sink, end to end (start to exit of `encwatch run` with
// a files source that does not watch), against baselines in the same run:
// `encwatch replay` followed by kcat -P -X acks=all (Kafka) or by a
// 4-connection client posting the same signed bodies (webhook), or replay
// alone (stdout). Builds alternate with the baselines; medians and spread.
//
//	go run ./bench/burst -corpus DIR -bin BIN[,BIN2] -sink kafka|webhook|stdout -runs 5
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/encwatch/encwatch/alert/webhook"
)

func main() {
	corpus := flag.String("corpus", "", "folder of trail files (gencorpus -out)")
	bins := flag.String("bin", "", "comma-separated encwatch binaries to compare")
	sink := flag.String("sink", "stdout", "kafka, webhook or stdout")
	runs := flag.Int("runs", 5, "runs of each")
	flag.Parse()
	if *corpus == "" || *bins == "" {
		flag.Usage()
		os.Exit(2)
	}
	tmp, _ := os.MkdirTemp("", "encwatch-burst-")
	defer os.RemoveAll(tmp)
	binList := strings.Split(*bins, ",")
	lines := replayLines(binList[0], *corpus, tmp)
	fmt.Printf("burst: %d alerts from %s, sink %s\n", len(lines), *corpus, *sink)
	times := map[string][]time.Duration{}
	for r := 0; r < *runs; r++ {
		start := time.Now()
		replayLines(binList[0], *corpus, tmp)
		rep := time.Since(start)
		base := rep
		switch *sink {
		case "kafka":
			base += kcat(lines)
		case "webhook":
			base += post4(lines)
		}
		times["baseline"] = append(times["baseline"], base)
		for _, b := range binList {
			d := runDaemon(b, *corpus, *sink, tmp, len(lines))
			times[b] = append(times[b], d)
		}
		fmt.Printf("run %d: baseline %v", r+1, base.Round(time.Millisecond))
		for _, b := range binList {
			fmt.Printf("  %s %v", filepath.Base(b), times[b][r].Round(time.Millisecond))
		}
		fmt.Println()
	}
	med := func(ds []time.Duration) (time.Duration, time.Duration, time.Duration) {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[len(s)/2], s[0], s[len(s)-1]
	}
	bm, blo, bhi := med(times["baseline"])
	fmt.Printf("baseline (replay%s): median %v (%v–%v)\n", map[string]string{"kafka": " + kcat -P -X acks=all", "webhook": " + 4-connection client"}[*sink], bm.Round(time.Millisecond), blo.Round(time.Millisecond), bhi.Round(time.Millisecond))
	for _, b := range binList {
		m, lo, hi := med(times[b])
		fmt.Printf("%s run: median %v (%v–%v), %.2fx the baseline\n", b, m.Round(time.Millisecond), lo.Round(time.Millisecond), hi.Round(time.Millisecond), float64(m)/float64(bm))
	}
}

func replayLines(bin, corpus, tmp string) [][]byte {
	out, err := exec.Command(bin, "replay", "--quiet", "--format", "json", corpus).Output()
	if err != nil && len(out) == 0 {
		fmt.Fprintln(os.Stderr, "replay:", err)
		os.Exit(1)
	}
	return bytes.Split(bytes.TrimSpace(out), []byte("\n"))
}

var secret = []byte("burst-secret")

// receiver counts the alerts a webhook receives, checking signatures.
type receiver struct{ n atomic.Int64 }

func (rx *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	buf.ReadFrom(r.Body)
	if webhook.Verify(secret, r.Header.Get(webhook.HeaderTimestamp), buf.Bytes(), r.Header.Get(webhook.HeaderSignature), time.Now(), time.Hour) != nil {
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	rx.n.Add(1)
}

func post4(lines [][]byte) time.Duration {
	rx := &receiver{}
	srv := httptest.NewServer(rx)
	defer srv.Close()
	start := time.Now()
	var wg sync.WaitGroup
	ch := make(chan []byte)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range ch {
				ts := strconv.FormatInt(time.Now().Unix(), 10)
				req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(b))
				req.Header.Set(webhook.HeaderTimestamp, ts)
				req.Header.Set(webhook.HeaderSignature, webhook.Sign(secret, ts, b))
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}()
	}
	for _, l := range lines {
		ch <- l
	}
	close(ch)
	wg.Wait()
	return time.Since(start)
}

func cluster() (*kfake.Cluster, string) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, "alerts"))
	if err != nil {
		panic(err)
	}
	return c, c.ListenAddrs()[0]
}

func kcat(lines [][]byte) time.Duration {
	c, addr := cluster()
	defer c.Close()
	f, _ := os.CreateTemp("", "burst-*.jsonl")
	defer os.Remove(f.Name())
	f.Write(bytes.Join(lines, []byte("\n")))
	f.Close()
	start := time.Now()
	cmd := exec.Command("kcat", "-P", "-b", addr, "-t", "alerts", "-X", "acks=all", "-l", f.Name())
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintln(os.Stderr, "kcat:", err, string(out))
		os.Exit(1)
	}
	return time.Since(start)
}

func count(addr string, want int) int {
	cl, _ := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("alerts"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	n := 0
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for n < want && ctx.Err() == nil {
		n += cl.PollFetches(ctx).NumRecords()
	}
	return n
}

func runDaemon(bin, corpus, sink, tmp string, want int) time.Duration {
	state, _ := os.MkdirTemp(tmp, "state-")
	var sinkCfg string
	var check func() int
	switch sink {
	case "kafka":
		c, addr := cluster()
		defer c.Close()
		sinkCfg = fmt.Sprintf("  kafka: {brokers: [%q], topic: alerts}\n", addr)
		check = func() int { return count(addr, want) }
	case "webhook":
		rx := &receiver{}
		srv := httptest.NewServer(rx)
		defer srv.Close()
		sinkCfg = fmt.Sprintf("  webhooks: [{name: rx, url: %q, secretEnv: BURST_HMAC}]\n", srv.URL)
		check = func() int { return int(rx.n.Load()) }
	default:
		sinkCfg = "  stdout: {}\n"
	}
	cfg := filepath.Join(state, "encwatch.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("state: {dir: %q}\nhttp: {listen: \"127.0.0.1:0\"}\nlog: {level: warn}\nsources:\n  files: {paths: [%q], watch: false}\nsinks:\n%s",
		filepath.Join(state, "s"), corpus, sinkCfg)), 0o600)
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "BURST_HMAC="+string(secret))
	var out bytes.Buffer
	cmd.Stdout = &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, bin, "run:", err)
		os.Exit(1)
	}
	d := time.Since(start)
	got := 0
	if check != nil {
		got = check()
	} else {
		sc := bufio.NewScanner(&out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			got++
		}
	}
	if got < want {
		fmt.Fprintf(os.Stderr, "%s: %d alerts delivered, want %d\n", bin, got, want)
		os.Exit(1)
	}
	return d
}
