package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/encwatch/encwatch/rules"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
)

func runCLI(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

const rec = "../../fixtures/records/"

func TestReplayExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"findings below fail-on", []string{"replay", "--fail-on", "critical", rec + "gp-delete.json"}, exitOK},
		{"finding reaches fail-on", []string{"replay", "--fail-on", "high", rec + "gp-delete.json"}, exitFindings},
		{"no fail-on", []string{"replay", rec + "gp-delete.json"}, exitOK},
		{"no finding", []string{"replay", "--fail-on", "info", rec + "gp-put-kms-cmk.json"}, exitOK},
		{"bad fail-on", []string{"replay", "--fail-on", "severe", rec + "gp-delete.json"}, exitUsage},
		{"bad format", []string{"replay", "--format", "xml", rec + "gp-delete.json"}, exitUsage},
		{"no path", []string{"replay"}, exitUsage},
		{"missing path", []string{"replay", rec + "no-such-file.json"}, exitUsage},
		{"bad config", []string{"replay", "--config", "testdata/bad.yaml", rec + "gp-delete.json"}, exitUsage},
		{"unknown command", []string{"frobnicate"}, exitUsage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, "", tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.code, stderr)
			}
		})
	}
}

func TestReplayStdinAndJSONOnlyOnStdout(t *testing.T) {
	b, err := os.ReadFile(rec + "gp-delete-root.json")
	if err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, string(b), "replay", "--format", "json", "-")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	alerts := parseAlerts(t, []byte(stdout))
	if len(alerts) != 2 || alerts[0].Rule != "encryption-deleted" || alerts[1].Rule != "root-principal" {
		t.Errorf("alerts: %+v", alerts)
	}
	if !strings.Contains(stderr, "1 files") || !strings.Contains(stderr, "2 findings") {
		t.Errorf("summary on stderr: %q", stderr)
	}
	// The id is deterministic: the same replay gives the same ids.
	_, stdout2, _ := runCLI(t, string(b), "replay", "--format", "json", "-")
	if a2 := parseAlerts(t, []byte(stdout2)); a2[0].ID != alerts[0].ID || a2[1].ID != alerts[1].ID || alerts[0].ID == alerts[1].ID {
		t.Errorf("ids not deterministic or not distinct: %s %s / %s %s", alerts[0].ID, alerts[1].ID, a2[0].ID, a2[1].ID)
	}
}

func TestReplayTextFormat(t *testing.T) {
	code, stdout, _ := runCLI(t, "", "replay", rec+"dir-put-dsse.json")
	if code != exitOK || !strings.HasPrefix(stdout, "MEDIUM") || !strings.Contains(stdout, "directory-algorithm-unsupported") ||
		!strings.Contains(stdout, "analytics--usw2-az1--x-s3") {
		t.Errorf("text output: %q", stdout)
	}
}

func TestConfigCheck(t *testing.T) {
	code, stdout, _ := runCLI(t, "", "config", "check", "../../deploy/examples/encwatch.yaml")
	if code != exitOK || !strings.Contains(stdout, "OK") {
		t.Errorf("example config: exit %d %q", code, stdout)
	}
	code, _, stderr := runCLI(t, "", "config", "check", "testdata/bad.yaml")
	if code != exitUsage || !strings.Contains(stderr, "testdata/bad.yaml:4: sources.lookup.intervall: unknown key") ||
		!strings.Contains(stderr, "testdata/bad.yaml:7: policy.readBurst.buckets: wrong type") {
		t.Errorf("bad config: exit %d\n%s", code, stderr)
	}
	code, _, stderr = runCLI(t, "", "config", "check", filepath.Join(t.TempDir(), "missing.yaml"))
	if code != exitUsage || !strings.Contains(stderr, "missing.yaml") {
		t.Errorf("missing config: exit %d %s", code, stderr)
	}
}

func TestRulesAndVersion(t *testing.T) {
	code, stdout, _ := runCLI(t, "", "rules")
	if code != exitOK || strings.Count(stdout, "\n") != len(rules.Catalogue)+1 || !strings.Contains(stdout, "directory-kms-key-changed") {
		t.Errorf("rules: %d\n%s", code, stdout)
	}
	code, stdout, _ = runCLI(t, "", "version")
	if code != exitOK || !strings.HasPrefix(stdout, "encwatch ") {
		t.Errorf("version: %q", stdout)
	}
}

// TestDeadletterCommand lists and requeues a dead letter through the CLI.
func TestDeadletterCommand(t *testing.T) {
	state := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfg, []byte("state: {dir: "+state+"}\n"), 0o600)
	db, err := bolt.Open(filepath.Join(state, "encwatch.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	rejecting := &rejectSink{}
	ob, _ := outbox.New(outbox.Options{DB: db, Queues: []outbox.Queue{{Sink: rejecting}}, Logger: zerolog.Nop()})
	db.Update(func(tx *bolt.Tx) error {
		_, err := ob.Put(tx, alert.Alert{Schema: alert.Schema, ID: "dl-1"})
		return err
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ob.Run(ctx, 0); close(done) }()
	testkit.Eventually(t, 5*time.Second, func() bool { return ob.Depth("hook") == 0 }, "the rejected alert is still in the outbox")
	cancel()
	<-done
	db.Close()
	code, stdout, stderr := runCLI(t, "", "deadletter", "list", "--config", cfg)
	if code != exitOK || !strings.Contains(stdout, "hook\t1\t") || !strings.Contains(stdout, "HTTP 400") || !strings.Contains(stdout, `"id":"dl-1"`) {
		t.Fatalf("list: %d %q %q", code, stdout, stderr)
	}
	code, stdout, _ = runCLI(t, "", "deadletter", "retry", "--config", cfg, "--sink", "hook")
	if code != exitOK || !strings.HasPrefix(stdout, "1 alerts moved back") {
		t.Fatalf("retry: %d %q", code, stdout)
	}
	code, stdout, _ = runCLI(t, "", "deadletter", "list", "--config", cfg)
	if code != exitOK || stdout != "" {
		t.Errorf("after retry: %q", stdout)
	}
}

type rejectSink struct{}

func (rejectSink) Name() string { return "hook" }
func (rejectSink) Send(context.Context, alert.Delivery) error {
	return alert.Permanent(errors.New("POST https://hooks.example.com/x: HTTP 400: unknown channel"))
}

// TestConfigPrintMasksSecrets: config check --print shows the effective
// configuration without the token a webhook URL holds.
func TestConfigPrintMasksSecrets(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(p, []byte(`sinks:
  webhooks: [{name: s, url: "https://user:PASSWORD-x@hooks.example.com/in?token=TOKEN-y", secretEnv: H}]
`), 0o600)
	code, stdout, stderr := runCLI(t, "", "config", "check", "--print", p)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if strings.Contains(stdout, "PASSWORD-x") || strings.Contains(stdout, "TOKEN-y") || !strings.Contains(stdout, "https://hooks.example.com/in?(masked)") {
		t.Errorf("printed configuration:\n%s", stdout)
	}
	if !strings.Contains(stdout, "listen: 127.0.0.1:9108") || !strings.Contains(stdout, "maxdecompressedbytes") && !strings.Contains(stdout, "maxDecompressedBytes") {
		t.Errorf("defaults missing from the effective configuration:\n%s", stdout)
	}
}
