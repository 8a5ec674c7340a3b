package main

import (
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/encwatch/encwatch/alert"
)

// TestKillsWhileOutboxBusy kills the daemon (SIGKILL) ten times while the
// outbox holds over a thousand alerts for a slow webhook that fails one
// request in fifty and for Kafka, each after a short up-time; then lets it
// finish. Every alert reaches both sinks, with the ids it was first given;
// the test reports how many kills landed with alerts in flight.
func TestKillsWhileOutboxBusy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon eleven times")
	}
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "encwatch-alerts"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	// A slow webhook (15 ms an answer, one at a time: about 66 alerts a
	// second) keeps the outbox full through the kills.
	hook := &hookReceiver{secret: []byte("hmac-secret-for-kills"), delay: 15 * time.Millisecond, failEvery: 50, seen: map[string]int{}}
	srv := httptest.NewServer(hook)
	defer srv.Close()

	const n = 1500
	dir := t.TempDir()
	want := map[string]bool{}
	now := time.Now()
	for f := range 3 {
		var lines []string
		for i := range n / 3 {
			id := fmt.Sprintf("busy-%d-%04d", f, i)
			lines = append(lines, string(lookupRecord(id, "DeleteBucketEncryption", now.Add(-time.Duration(i)*time.Second))))
			want[alert.ID("encryption-deleted", "111122223333", id)] = true
		}
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("events-%d.jsonl", f)), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	}
	secretFile := writeFile(t, "hmac", string(hook.secret))
	cfgPath := writeFile(t, "encwatch.yaml", fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources: {files: {paths: [%q]}}
sinks:
  kafka: {brokers: [%q], topic: encwatch-alerts}
  webhooks:
    - {name: secops, url: %q, secretFile: %q, concurrency: 1}
`, t.TempDir(), dir, kc.ListenAddrs()[0], srv.URL+"/hook", secretFile))

	const kills = 10
	busyKills, inFlightKills := 0, 0
	for k := range kills {
		d := startDaemon(t, cfgPath, "http://127.0.0.1:1")
		time.Sleep(time.Duration(400+rand.IntN(600)) * time.Millisecond)
		got := len(hook.ids())
		d.cmd.Process.Kill()
		d.wait()
		if pending := n - got; pending > 0 {
			inFlightKills++
			if pending >= 1000 {
				busyKills++
			}
		}
		t.Logf("kill %d: %d of %d alerts at the webhook", k+1, got, n)
	}
	startDaemon(t, cfgPath, "http://127.0.0.1:1").finish(t, 120*time.Second)
	got := hook.ids()
	lost := 0
	for id := range want {
		if got[id] == 0 {
			lost++
		}
	}
	resent := 0
	for id, c := range got {
		if !want[id] {
			t.Errorf("the webhook got an alert id nobody expected: %s", id)
		}
		resent += c - 1
	}
	inKafka := kafkaAlertIDs(t, kc.ListenAddrs(), len(want), 20*time.Second)
	lostKafka := 0
	for id := range want {
		if inKafka[id] == 0 {
			lostKafka++
		}
	}
	if lost > 0 || lostKafka > 0 || hook.bad > 0 {
		t.Errorf("lost %d alerts at the webhook and %d in Kafka; %d bad signatures", lost, lostKafka, hook.bad)
	}
	if busyKills < kills/2 {
		t.Errorf("only %d of %d kills landed with 1,000 alerts or more in the outbox: the test did not prove what it claims", busyKills, kills)
	}
	t.Logf("%d kills: %d with alerts in flight, %d with >= 1,000 waiting for the webhook; %d alerts, 0 lost at the webhook and in Kafka; %d webhook resends (same ids)",
		kills, inFlightKills, busyKills, n, resent)
}
