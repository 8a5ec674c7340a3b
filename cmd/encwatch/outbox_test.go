package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/cmd/daemon"
)

// namedSink stands for a sink of an earlier configuration; it never sends.
type namedSink string

func (n namedSink) Name() string                               { return string(n) }
func (n namedSink) Send(context.Context, alert.Delivery) error { return fmt.Errorf("never sent") }

// TestOrphanedQueueReportedAndMoved: alerts waiting for a webhook that the
// configuration renamed are reported at start (log and
// encwatch_outbox_orphaned), listed as orphaned by `encwatch outbox list`,
// moved to the new webhook with `encwatch outbox move`, then delivered once
// each.
func TestOrphanedQueueReportedAndMoved(t *testing.T) {
	state, empty := t.TempDir(), t.TempDir()
	db, err := bolt.Open(filepath.Join(state, "encwatch.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := outbox.New(outbox.Options{DB: db, Queues: []outbox.Queue{{Sink: namedSink("webhook:secops")}}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	const pending = 25
	err = db.Update(func(tx *bolt.Tx) error {
		for i := range pending {
			if _, err := ob.Put(tx, alert.Alert{Schema: alert.Schema, ID: fmt.Sprintf("orphan-%02d", i), Rule: "encryption-deleted", Severity: "high"}); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	rx := &hookReceiver{secret: []byte("s3cret"), seen: map[string]int{}}
	srv := httptest.NewServer(rx)
	t.Cleanup(srv.Close)
	secret := writeFile(t, "hmac", "s3cret")
	cfgPath := writeFile(t, "c.yaml", fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources: {files: {paths: [%q], watch: false}}
sinks:
  webhooks: [{name: security, url: %q, secretFile: %q}]
`, state, empty, srv.URL, secret))
	runDaemon := func() (string, *prometheus.Registry) {
		t.Helper()
		cfg, err := config.Load(cfgPath, nil)
		if err != nil {
			t.Fatal(err)
		}
		var logs testkit.Buffer
		reg := prometheus.NewRegistry()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := daemon.Run(ctx, daemon.Options{Config: cfg, Stdout: &testkit.Buffer{}, Stderr: &logs, Registry: reg}); err != nil {
			t.Fatalf("daemon: %v\n%s", err, logs.String())
		}
		return logs.String(), reg
	}

	// The renamed webhook's queue is reported, not sent.
	logs, reg := runDaemon()
	if !strings.Contains(logs, "webhook:secops") || !strings.Contains(logs, "encwatch outbox move --from webhook:secops") {
		t.Errorf("no warning naming the orphaned queue and the way out:\n%s", logs)
	}
	if v := testkit.MetricValue(t, reg, "encwatch_outbox_orphaned", "queue", "webhook:secops"); v != pending {
		t.Errorf("encwatch_outbox_orphaned{queue=webhook:secops} = %v, want %d", v, pending)
	}
	if n := len(rx.ids()); n != 0 {
		t.Fatalf("%d orphaned alerts were sent before being moved", n)
	}

	code, stdout, stderr := runCLI(t, "", "outbox", "list", "--config", cfgPath)
	if code != exitOK || !strings.Contains(stdout, "webhook:secops") || !strings.Contains(stdout, "orphaned") || !strings.Contains(stdout, fmt.Sprint(pending)) {
		t.Fatalf("outbox list: %d\n%s%s", code, stdout, stderr)
	}
	if code, _, stderr := runCLI(t, "", "outbox", "move", "--config", cfgPath, "--from", "webhook:nope", "--to", "webhook:security"); code != 1 || !strings.Contains(stderr, "no queue") {
		t.Errorf("move from a missing queue: %d %s", code, stderr)
	}
	code, stdout, stderr = runCLI(t, "", "outbox", "move", "--config", cfgPath, "--from", "webhook:secops", "--to", "webhook:security")
	if code != exitOK || !strings.HasPrefix(stdout, fmt.Sprintf("%d alerts moved", pending)) {
		t.Fatalf("outbox move: %d %s %s", code, stdout, stderr)
	}

	logs, reg = runDaemon()
	got := rx.ids()
	if len(got) != pending {
		t.Errorf("%d alerts delivered after the move, want %d; log:\n%s", len(got), pending, logs)
	}
	for id, n := range got {
		if n != 1 || !strings.HasPrefix(id, "orphan-") {
			t.Errorf("alert %s delivered %d times", id, n)
		}
	}
	if v := testkit.MetricValue(t, reg, "encwatch_outbox_orphaned", "queue", "webhook:secops"); v != 0 {
		t.Errorf("still reported orphaned after the move: %v", v)
	}
	if code, stdout, _ := runCLI(t, "", "outbox", "list", "--config", cfgPath); code != exitOK || strings.Contains(stdout, "orphaned") {
		t.Errorf("outbox list after the move:\n%s", stdout)
	}
	if code, _, _ := runCLI(t, "", "outbox", "drop", "--config", cfgPath, "--queue", "webhook:security"); code != exitOK {
		t.Errorf("drop: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(state, "encwatch.db")); err != nil {
		t.Fatal(err)
	}
}
