package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/encwatch/encwatch/alert"
)

// BenchmarkLatency sends 100 encryption events a second for 20 s into a
// Kafka topic (kfake) that the daemon reads, and times each alert at a
// webhook on loopback: from the record's produce to the webhook's
// acknowledgement, and from the alert's detection (stored in the outbox)
// to it. p50 and p99:
//
//	go test -run '^$' -bench Latency -benchtime 1x ./cmd/encwatch/
func BenchmarkLatency(b *testing.B) {
	for b.Loop() {
		kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "cloudtrail"))
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		sentAt := map[string]time.Time{}
		var e2e, stored []time.Duration
		hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			now := time.Now()
			body, _ := io.ReadAll(r.Body)
			var a alert.Alert
			if json.Unmarshal(body, &a) == nil {
				mu.Lock()
				if s, ok := sentAt[a.Event.ID]; ok {
					e2e = append(e2e, now.Sub(s))
					stored = append(stored, now.Sub(a.DetectedAt))
					delete(sentAt, a.Event.ID)
				}
				mu.Unlock()
			}
		}))
		dir := b.TempDir()
		cfg := fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
log: {level: warn}
sources:
  kafka: {brokers: [%q], topic: cloudtrail, group: lat}
sinks:
  webhooks: [{name: rx, url: %q, secretEnv: LAT_HMAC}]
`, dir+"/state", kc.ListenAddrs()[0], hook.URL)
		path := dir + "/encwatch.yaml"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			b.Fatal(err)
		}
		d := startDaemon(b, path, "http://127.0.0.1:1", "LAT_HMAC=k")
		cl, _ := kgo.NewClient(kgo.SeedBrokers(kc.ListenAddrs()...), kgo.DefaultProduceTopic("cloudtrail"))
		time.Sleep(2 * time.Second) // the consumer group joins
		tick := time.NewTicker(10 * time.Millisecond)
		const n = 2000
		for i := range n {
			<-tick.C
			id := fmt.Sprintf("lat-%05d", i)
			rec := lookupRecord(id, "DeleteBucketEncryption", time.Now())
			mu.Lock()
			sentAt[id] = time.Now()
			mu.Unlock()
			cl.Produce(context.Background(), &kgo.Record{Value: rec}, nil)
		}
		tick.Stop()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			left := len(sentAt)
			mu.Unlock()
			if left == 0 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cl.Close()
		d.cmd.Process.Kill()
		d.wait()
		hook.Close()
		kc.Close()
		mu.Lock()
		if len(e2e) < n {
			b.Fatalf("%d of %d alerts arrived", len(e2e), n)
		}
		q := func(ds []time.Duration, p float64) float64 {
			s := slices.Clone(ds)
			slices.Sort(s)
			return float64(s[int(p*float64(len(s)-1))].Microseconds()) / 1000
		}
		b.ReportMetric(q(e2e, 0.5), "produce-to-ack-p50-ms")
		b.ReportMetric(q(e2e, 0.99), "produce-to-ack-p99-ms")
		b.ReportMetric(q(stored, 0.5), "stored-to-ack-p50-ms")
		b.ReportMetric(q(stored, 0.99), "stored-to-ack-p99-ms")
		mu.Unlock()
	}
}
