package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/twmb/franz-go/pkg/kfake"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/cmd/config"
)

// TestSecretsNeverLeak runs the daemon with known secrets through retries
// and a dead letter, then looks for them in everything it wrote and
// served: stdout, the log, /metrics, /buckets and the dead letters. It also
// checks the HTTP surface: a bearer token on everything but /healthz, and
// no pprof unless asked for.
func TestSecretsNeverLeak(t *testing.T) {
	secrets := map[string]string{"hmac": "HMAC-hunter2-secret", "kafka": "KAFKA-swordfish-pw", "urlToken": "URLTOKEN-in-query-77", "bearer": "BEARER-tok-9f3c"}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "alerts"), kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-256", "encwatch", secrets["kafka"]))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	var calls atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n := calls.Add(1); {
		case n <= 2:
			http.Error(w, "try later", http.StatusInternalServerError) // retried
		case n == 3:
			http.Error(w, "unknown channel", http.StatusBadRequest) // dead letter
		}
	}))
	defer hook.Close()
	dir := t.TempDir()
	for k, v := range map[string]string{"hmac": secrets["hmac"], "token": secrets["bearer"]} {
		os.WriteFile(filepath.Join(dir, k), []byte(v+"\n"), 0o600)
	}
	t.Setenv("KAFKA_PASSWORD", secrets["kafka"])
	state := t.TempDir()
	cfg, err := config.Parse("test", []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0", tokenFile: %q}
log: {level: debug}
sources: {files: {paths: ["../../fixtures/records/gp-delete.json", "../../fixtures/records/dir-delete.json", "../../fixtures/records/gp-put-aes256.json"], watch: true, interval: 1h}}
sinks:
  stdout: {}
  kafka: {brokers: [%q], topic: alerts, sasl: {mechanism: SCRAM-SHA-256, username: encwatch, passwordEnv: KAFKA_PASSWORD}}
  webhooks: [{name: hook, url: %q, secretFile: %q}]
`, state, filepath.Join(dir, "token"), kc.ListenAddrs()[0], hook.URL+"/in?token="+secrets["urlToken"], filepath.Join(dir, "hmac"))), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out, logs testkit.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Stdout: &out, Stderr: &logs, OnReady: func(a string) { addrc <- a }})
	}()
	addr := <-addrc
	get := func(path string, auth bool) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+secrets["bearer"])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testkit.Eventually(t, 30*time.Second, func() bool { return calls.Load() >= 5 }, "the webhook was called %d times, want 5", calls.Load())
	for path, want := range map[string]int{"/healthz": 200, "/metrics": 401, "/buckets": 401, "/readyz": 401} {
		if code, _ := get(path, false); code != want {
			t.Errorf("%s without a token: %d, want %d", path, code, want)
		}
	}
	if code, _ := get("/debug/pprof/", true); code != http.StatusNotFound {
		t.Errorf("pprof answered %d though not enabled", code)
	}
	_, metrics := get("/metrics", true)
	_, buckets := get("/buckets", true)
	if !strings.Contains(buckets, `"name":"finance-reports"`) {
		t.Errorf("/buckets with the token: %s", buckets)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(state, "encwatch.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	dl, _ := outbox.DeadLetters(db, "")
	db.Close()
	var dead strings.Builder
	for _, e := range dl {
		fmt.Fprintf(&dead, "%s %s %s\n", e.Sink, e.Reason, e.Alert)
	}
	if len(dl) != 1 || !strings.Contains(dead.String(), "HTTP 400") {
		t.Errorf("dead letters: %s", dead.String())
	}
	if !strings.Contains(logs.String(), "retrying") || !strings.Contains(metrics, `encwatch_alerts_retried_total{sink="webhook:hook"} 2`) {
		t.Error("the retries did not happen: the test would prove nothing")
	}
	everything := map[string]string{"stdout": out.String(), "log": logs.String(), "metrics": metrics, "buckets": buckets, "dead letters": dead.String()}
	for where, text := range everything {
		for name, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("the %s secret appears in %s", name, where)
			}
		}
	}
}
