package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/webhook"
)

// hookReceiver verifies signatures as a receiver would (webhook.Verify,
// itself checked against an independent HMAC in the webhook package's
// tests) and counts alerts by id.
type hookReceiver struct {
	secret []byte
	delay  time.Duration
	// failEvery makes every failEvery-th request a 503 (0: none fail).
	failEvery int
	mu        sync.Mutex
	seen      map[string]int
	bad       int
	requests  int
}

func (h *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	time.Sleep(h.delay)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.requests++
	if h.failEvery > 0 && h.requests%h.failEvery == 0 {
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	}
	if webhook.Verify(h.secret, r.Header.Get(webhook.HeaderTimestamp), body, r.Header.Get(webhook.HeaderSignature), time.Now(), 5*time.Minute) != nil {
		h.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	h.seen[r.Header.Get("X-Encwatch-Alert-Id")]++
}

func (h *hookReceiver) ids() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for k, v := range h.seen {
		out[k] = v
	}
	return out
}

// kafkaAlertIDs reads the encwatch-alerts topic from the start until it
// has seen want distinct alert ids or timeout passed, and counts each id.
func kafkaAlertIDs(t *testing.T, brokers []string, want int, timeout time.Duration) map[string]int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("encwatch-alerts"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ids := map[string]int{}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for len(ids) < want && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			var a alert.Alert
			json.Unmarshal(r.Value, &a)
			ids[a.ID]++
		})
	}
	return ids
}

// TestSIGKILLWithAlertsInFlight kills the daemon while alerts are on their
// way to Kafka and to a slow webhook; after a restart on the same state
// every alert has reached both, with the same ids.
func TestSIGKILLWithAlertsInFlight(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon twice")
	}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "encwatch-alerts"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	hook := &hookReceiver{secret: []byte("hmac-secret-for-test"), delay: 30 * time.Millisecond, seen: map[string]int{}}
	srv := httptest.NewServer(hook)
	defer srv.Close()

	dir := t.TempDir()
	var lines []string
	want := map[string]bool{}
	now := time.Now()
	for i := range 80 {
		id := fmt.Sprintf("kill-%03d", i)
		lines = append(lines, string(lookupRecord(id, "DeleteBucketEncryption", now.Add(-time.Duration(i)*time.Second))))
		want[alert.ID("encryption-deleted", "111122223333", id)] = true
	}
	os.WriteFile(filepath.Join(dir, "events.jsonl"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	secretFile := filepath.Join(t.TempDir(), "hmac")
	os.WriteFile(secretFile, hook.secret, 0o600)
	cfgPath := filepath.Join(t.TempDir(), "encwatch.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources: {files: {paths: [%q]}}
sinks:
  kafka: {brokers: [%q], topic: encwatch-alerts}
  webhooks:
    - {name: secops, url: %q, secretFile: %q}
`, t.TempDir(), dir, kc.ListenAddrs()[0], srv.URL+"/hook?token=abc", secretFile)), 0o600)

	d := startDaemon(t, cfgPath, "http://127.0.0.1:1")
	for deadline := time.Now().Add(20 * time.Second); len(hook.ids()) < 15 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	d.cmd.Process.Kill()
	d.wait()
	before := len(hook.ids())
	if before >= len(want) {
		t.Logf("every alert arrived before the kill; the restart must still leave nothing out")
	}
	startDaemon(t, cfgPath, "http://127.0.0.1:1").finish(t, 60*time.Second)
	got := hook.ids()
	for id := range want {
		if got[id] == 0 {
			t.Errorf("webhook never got %s", id)
		}
	}
	if hook.bad > 0 {
		t.Errorf("%d requests with a bad signature", hook.bad)
	}
	inKafka := kafkaAlertIDs(t, kc.ListenAddrs(), len(want), 10*time.Second)
	for id := range want {
		if inKafka[id] == 0 {
			t.Errorf("kafka never got %s", id)
		}
	}
	resent := 0
	for _, n := range got {
		resent += n - 1
	}
	t.Logf("webhook: %d alerts before the kill, %d after; %d resent (same ids)", before, len(got), resent)
}
