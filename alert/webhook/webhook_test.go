package webhook_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/alert/webhook"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

var secret = []byte("s3cr3t-hmac-key")

// receiver is an independent implementation of what the README tells
// receivers to do: check the signature over timestamp + "." + body,
// reject stale timestamps, and deduplicate by alert id.
type receiver struct {
	mu       sync.Mutex
	answers  []int // status codes for the next requests; empty: 200
	delay    time.Duration
	seen     map[string]int
	badSig   int
	requests int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.requests++
	delay := r.delay
	status := 200
	if len(r.answers) > 0 {
		status, r.answers = r.answers[0], r.answers[1:]
	}
	r.mu.Unlock()
	time.Sleep(delay)
	if !verify(req.Header.Get("X-Encwatch-Timestamp"), req.Header.Get("X-Encwatch-Signature"), body) {
		r.mu.Lock()
		r.badSig++
		r.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	if status != 200 {
		http.Error(w, "try later", status)
		return
	}
	var a struct{ ID string }
	json.Unmarshal(body, &a)
	if a.ID != req.Header.Get("X-Encwatch-Alert-Id") {
		http.Error(w, "id header differs from body", http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.seen[a.ID]++
	r.mu.Unlock()
}

func verify(ts, sig string, body []byte) bool {
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || time.Since(time.Unix(t, 0)) > 5*time.Minute {
		return false
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(sig), []byte(want))
}

func TestSignatureAndTampering(t *testing.T) {
	r := &receiver{seen: map[string]int{}}
	srv := httptest.NewServer(r)
	defer srv.Close()
	s, _ := webhook.New(webhook.Options{Name: "t", URL: srv.URL, Secret: secret})
	body := []byte(`{"schema":"encwatch.alert/v1","id":"abc"}`)
	if err := s.Send(context.Background(), alert.Delivery{Alert: alert.Alert{ID: "abc"}, Body: body}); err != nil {
		t.Fatal(err)
	}
	if r.seen["abc"] != 1 {
		t.Fatalf("receiver did not accept a signed alert: %v", r.seen)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	sig := webhook.Sign(secret, ts, body)
	if !verify(ts, sig, body) {
		t.Error("Sign disagrees with the receiver")
	}
	tampered := []byte(strings.Replace(string(body), "abc", "abd", 1))
	if verify(ts, sig, tampered) {
		t.Error("a tampered body passed verification")
	}
	if verify(ts, webhook.Sign([]byte("other"), ts, body), body) {
		t.Error("a signature with another secret passed")
	}
}

// TestDeliveryThroughTrouble sends alerts through the outbox to a receiver
// that is down, answers 503, answers 429 with Retry-After, and is slow:
// every alert arrives, once per id as the receiver counts, and the retry
// metrics show it. A 400 dead-letters its alert; `deadletter retry` sends
// it again.
func TestDeliveryThroughTrouble(t *testing.T) {
	r := &receiver{seen: map[string]int{}}
	// Reserve a port and start the receiver on it only later: down at first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s, err := webhook.New(webhook.Options{Name: "secops", URL: "http://" + addr + "/hook?token=SECRET-TOKEN", Secret: secret, Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := prometheus.NewRegistry()
	var logs strings.Builder
	var logMu sync.Mutex
	logger := zerolog.New(zerolog.SyncWriter(&lockedWriter{w: &logs, mu: &logMu}))
	ob, err := outbox.New(outbox.Options{DB: db, Queues: []outbox.Queue{{Sink: s}}, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: logger, Metrics: outbox.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{"a1", "a2", "a3", "a4", "a5", "a6"}
	for _, id := range ids {
		db.Update(func(tx *bolt.Tx) error { _, err := ob.Put(tx, alert.Alert{Schema: alert.Schema, ID: id}); return err })
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done1 := make(chan struct{})
	go func() { ob.Run(ctx, time.Second); close(done1) }()
	time.Sleep(300 * time.Millisecond) // refused connections meanwhile
	r.answers = []int{503, 503, 429, 200, 400}
	r.delay = 400 * time.Millisecond // the first answers time out
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: r}}
	srv.Start()
	defer srv.Close()
	time.Sleep(time.Second)
	r.mu.Lock()
	r.delay = 0
	r.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for ob.Depth(s.Name()) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r.mu.Lock()
	seen := len(r.seen)
	for id, n := range r.seen {
		if n != 1 {
			t.Errorf("receiver saw %s %d times", id, n)
		}
	}
	r.mu.Unlock()
	dl, _ := outbox.DeadLetters(db, "")
	if seen+len(dl) != len(ids) || len(dl) != 1 || !strings.Contains(dl[0].Reason, "HTTP 400") {
		t.Fatalf("%d delivered and dead letters %+v; want %d in all with one HTTP 400", seen, dl, len(ids))
	}
	if r := counter(t, reg, "encwatch_alerts_retried_total", s.Name()); r < 4 {
		t.Errorf("retries %v, want at least 4 (refused, timeout, 503, 503, 429)", r)
	}
	logMu.Lock()
	leaked := strings.Contains(logs.String(), "SECRET-TOKEN")
	logMu.Unlock()
	if leaked {
		t.Error("the webhook URL's token appears in the logs")
	}
	cancel()
	<-done1
	// deadletter retry: the alert goes back and is delivered.
	if n, err := outbox.Requeue(db, s.Name(), 0); n != 1 || err != nil {
		t.Fatalf("requeue: %d %v", n, err)
	}
	ob2, _ := outbox.New(outbox.Options{DB: db, Queues: []outbox.Queue{{Sink: s}}, Logger: zerolog.Nop()})
	ctx2, cancel2 := context.WithCancel(context.Background())
	done2 := make(chan struct{})
	go func() { ob2.Run(ctx2, time.Second); close(done2) }()
	defer func() { cancel2(); <-done2 }() // the outbox stops before the state closes
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		r.mu.Lock()
		n := len(r.seen)
		r.mu.Unlock()
		if n == len(ids) {
			return
		}
	}
	t.Errorf("the requeued alert did not arrive: %v", r.seen)
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestSlackFormat(t *testing.T) {
	got := webhook.Slack(alert.Alert{Rule: "encryption-deleted", Severity: "high", Summary: "deleted", Bucket: alert.Bucket{Name: "b"}})
	var m map[string]string
	if err := json.Unmarshal(got, &m); err != nil || !strings.HasPrefix(m["text"], "*HIGH* `encryption-deleted` deleted") {
		t.Errorf("slack message %s (%v)", got, err)
	}
}

// counter reads a sink's counter from a registry.
func counter(t *testing.T, reg *prometheus.Registry, name, sink string) float64 {
	t.Helper()
	return testkit.MetricValue(t, reg, name, "sink", sink)
}

// TestVerifyAgreesWithIndependentHMAC: webhook.Verify accepts exactly what
// the independent verifier above accepts: a tampered body, another secret,
// a stale or future timestamp and a timestamp that is not a number fail.
func TestVerifyAgreesWithIndependentHMAC(t *testing.T) {
	now := time.Now()
	ts := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`{"id":"x"}`)
	good := webhook.Sign(secret, ts, body)
	old := strconv.FormatInt(now.Add(-10*time.Minute).Unix(), 10)
	future := strconv.FormatInt(now.Add(10*time.Minute).Unix(), 10)
	for _, tc := range []struct {
		name          string
		secret        []byte
		ts, sig, body string
		ok            bool
	}{
		{"signed", secret, ts, good, string(body), true},
		{"tampered body", secret, ts, good, `{"id":"y"}`, false},
		{"other secret", []byte("other"), ts, good, string(body), false},
		{"stale", secret, old, webhook.Sign(secret, old, body), string(body), false},
		{"future", secret, future, webhook.Sign(secret, future, body), string(body), false},
		{"not a number", secret, "soon", webhook.Sign(secret, "soon", body), string(body), false},
		{"no signature", secret, ts, "", string(body), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := webhook.Verify(tc.secret, tc.ts, []byte(tc.body), tc.sig, now, 5*time.Minute)
			if (err == nil) != tc.ok {
				t.Errorf("Verify: %v, want ok=%v", err, tc.ok)
			}
			// The independent verifier checks only staleness; Verify also
			// refuses timestamps from the future.
			if indep := string(tc.secret) == string(secret) && verify(tc.ts, tc.sig, []byte(tc.body)); indep != tc.ok && tc.name != "future" {
				t.Errorf("the independent verifier says %v", indep)
			}
		})
	}
}

// TestSlackGolden: the Slack message, byte for byte, for an alert whose
// record fields try to mention @channel, forge a link, leave their code
// span and add lines.
func TestSlackGolden(t *testing.T) {
	a := alert.Alert{Schema: alert.Schema, ID: "x", Rule: "encryption-deleted", Severity: "high",
		Summary:     "default encryption deleted on general-purpose bucket <!channel> & <https://evil.example|your bank>",
		Remediation: "Restore the bucket's default encryption.",
		Bucket:      alert.Bucket{Name: "b`<!here>`\nx", Type: "general-purpose", Account: "111122223333", Region: "us-east-1"},
		Event:       alert.Event{ID: "e-1", Name: "DeleteBucketEncryption", Time: "2026-03-02T10:00:00Z", Actor: alert.Actor{ARN: "arn:aws:iam::111122223333:user/`<@U123>`"}},
		Encryption:  &alert.Encryption{Algorithm: "aws:kms", KMSKeyID: "alias/<!everyone>"},
	}
	got := webhook.Slack(a)
	var msg struct{ Text string }
	if err := json.Unmarshal(got, &msg); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"<!", "<@", "<https", "`<", "\nx"} {
		if strings.Contains(msg.Text, bad) {
			t.Errorf("the Slack text holds %q:\n%s", bad, msg.Text)
		}
	}
	testkit.Golden(t, "slack.json", append(got, '\n'))
}
