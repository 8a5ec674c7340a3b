package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

// runToEnd runs the daemon on a files source without watch until the
// sources finish and the outbox is delivered; it returns stdout, the log
// and the registry.
func runToEnd(t *testing.T, cfgText string, extra ...outbox.Queue) (string, string, *prometheus.Registry) {
	t.Helper()
	cfg, err := config.Parse("test", []byte(cfgText), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out, logs testkit.Buffer
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Run(ctx, Options{Config: cfg, Stdout: &out, Stderr: &logs, Registry: reg, Sinks: extra}); err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, logs.String())
	}
	if ctx.Err() != nil {
		t.Fatalf("the daemon did not finish by itself; log:\n%s", logs.String())
	}
	return out.String(), logs.String(), reg
}

func filesConfig(state, dir string) string {
	return fmt.Sprintf("state: {dir: %q}\nhttp: {listen: \"127.0.0.1:0\"}\nsources: {files: {paths: [%q], watch: false}}\nsinks: {stdout: {}}\n", state, dir)
}

func quarantineEntries(t *testing.T, state string) []Quarantined {
	t.Helper()
	db, err := bolt.Open(filepath.Join(state, "encwatch.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	qs, err := ListQuarantine(db)
	if err != nil {
		t.Fatal(err)
	}
	return qs
}

// TestStoreFailureIsSetAside: a record whose bucket name is longer than a
// bbolt key can be (hostile input a files or Kafka source can carry) makes
// its batch fail to store, every time. The batch is tried three times, set
// aside with its origin, the source moves on, the other file's alert goes
// out, and a restart neither repeats nor crashes.
func TestStoreFailureIsSetAside(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	poison := filepath.Join(dir, "a-poison.json")
	if err := os.WriteFile(poison, []byte(putRecord("poison-1", strings.Repeat("b", 40000), "", `{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"AES256"}}`)), 0o644); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "../../fixtures/records/gp-delete.json", filepath.Join(dir, "b-good.json"))
	out, logs, reg := runToEnd(t, filesConfig(state, dir))
	if !strings.Contains(out, `"rule":"encryption-deleted"`) || strings.Contains(out, "poison-1") {
		t.Errorf("stdout:\n%s", out)
	}
	if n := testkit.MetricValue(t, reg, "encwatch_batches_quarantined_total", "source", "files"); n != 1 {
		t.Errorf("encwatch_batches_quarantined_total{source=files} = %v, want 1", n)
	}
	if !strings.Contains(logs, "batch set aside in the quarantine") || !strings.Contains(logs, poison) || !strings.Contains(logs, "key too large") {
		t.Errorf("the log does not say what was set aside, from where and why:\n%s", logs)
	}
	qs := quarantineEntries(t, state)
	if len(qs) != 1 || qs[0].Reason != reasonStoreFailed || len(qs[0].Events) != 1 || qs[0].Events[0].ID != "poison-1" || !strings.Contains(qs[0].Origin, poison) {
		t.Fatalf("quarantine %+v", qs)
	}
	// A restart: the checkpoint moved past the poison; nothing again.
	out, _, _ = runToEnd(t, filesConfig(state, dir))
	if out != "" {
		t.Errorf("restart repeated: %s", out)
	}
	// Asked to retry, the next start tries it once more; it fails again and
	// goes back to the quarantine, unmarked.
	db, err := bolt.Open(filepath.Join(state, "encwatch.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := MarkQuarantineRetry(db, 0); err != nil || n != 1 {
		t.Fatalf("retry: %d %v", n, err)
	}
	db.Close()
	_, logs, reg = runToEnd(t, filesConfig(state, dir))
	if n := testkit.MetricValue(t, reg, "encwatch_batches_quarantined_total", "source", quarantineSource); n != 1 {
		t.Errorf("retried batch quarantined %v times, want 1; log:\n%s", n, logs)
	}
	if qs := quarantineEntries(t, state); len(qs) != 1 || qs[0].Retry {
		t.Errorf("after the retry: %+v", qs)
	}
}

// panicSink accepts every alert but panics when asked whether it takes an
// alert of the poison bucket: a panic inside the storing transaction.
type panicSink struct{}

func (panicSink) Name() string                               { return "panicky" }
func (panicSink) Send(context.Context, alert.Delivery) error { return nil }

// TestPanicWhileStoringIsSetAside: a panic inside the transaction that
// stores a batch (here from a sink's filter) is recovered, logged with its
// stack, and the batch set aside; the daemon goes on.
func TestPanicWhileStoringIsSetAside(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	copyFile(t, "../../fixtures/records/gp-delete.json", filepath.Join(dir, "a.json"))
	copyFile(t, "../../fixtures/records/dir-put-dsse.json", filepath.Join(dir, "b.json"))
	q := outbox.Queue{Sink: panicSink{}, Accept: func(a alert.Alert) bool {
		if a.Bucket.Name == "finance-reports" {
			panic("filter broke on " + a.Bucket.Name)
		}
		return true
	}}
	out, logs, reg := runToEnd(t, filesConfig(state, dir), q)
	if strings.Contains(out, "finance-reports") || !strings.Contains(out, `"rule":"directory-algorithm-unsupported"`) {
		t.Errorf("stdout:\n%s", out)
	}
	if n := testkit.MetricValue(t, reg, "encwatch_batches_quarantined_total", "source", "files"); n != 1 {
		t.Errorf("quarantined %v, want 1", n)
	}
	if !strings.Contains(logs, "filter broke on finance-reports") || !strings.Contains(logs, "goroutine") {
		t.Errorf("the log lacks the panic and its stack:\n%s", logs)
	}
}

// TestCrashLoopBreaks: events that were in flight when the process died
// twice are set aside the next time a source hands them on, however the
// source batches them; one crash alone sets nothing aside.
func TestCrashLoopBreaks(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ob, err := outbox.New(outbox.Options{DB: db, Queues: []outbox.Queue{{Sink: alert.NewStdout(&testkit.Buffer{})}}, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p := &pipeline{db: db, outbox: ob, now: time.Now, metrics: newPipelineMetrics(reg), log: zerolog.Nop()}
	e, err := rules.New(rules.DefaultPolicy(), nil)
	if err != nil {
		t.Fatal(err)
	}
	p.engine.Store(e)
	ev := func(id string) *ingest.Event {
		return &ingest.Event{ID: id, Digest: "d-" + id, Name: ingest.DeleteBucketEncryption, Source: ingest.SourceS3, Account: "1",
			Bucket: ingest.Bucket{Name: "b-" + id, Type: ingest.BucketGeneralPurpose, Account: "1"}, Origin: ingest.Position{Source: "f/" + id}}
	}
	batch := ingest.Batch{Source: "files", Events: []*ingest.Event{ev("1"), ev("2"), ev("3")}, Checkpoints: map[string][]byte{"cp": []byte("x")}}
	crash := func(b ingest.Batch) { // the process dies judging b
		if _, err := markInflight(db, b, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := recoverInflight(db, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	crash(batch)
	// After one crash the same events are judged as usual.
	second := ingest.Batch{Source: "files", Events: []*ingest.Event{ev("2"), ev("4")}}
	crash(second) // event 2 was in flight at both crashes
	if err := p.handle(context.Background(), ingest.Batch{Source: "files", Events: []*ingest.Event{ev("1"), ev("2"), ev("3"), ev("4")},
		Checkpoints: map[string][]byte{"cp": []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	qs, err := ListQuarantine(db)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 1 || qs[0].Reason != reasonCrashed || len(qs[0].Events) != 1 || qs[0].Events[0].ID != "2" {
		t.Fatalf("quarantine %+v, want event 2 alone", qs)
	}
	if n := testutil.ToFloat64(p.metrics.findings.WithLabelValues(rules.EncryptionDeleted, "high")); n != 3 {
		t.Errorf("%v findings of the other events, want 3", n)
	}
	var cp []byte
	db.View(func(tx *bolt.Tx) error {
		cp = append(cp, tx.Bucket(ingest.CheckpointTable).Get([]byte("cp"))...)
		return nil
	})
	if string(cp) != "y" {
		t.Errorf("checkpoint %q: the source did not move on", cp)
	}
	// The stored batch left no mark and no suspect behind.
	db.View(func(tx *bolt.Tx) error {
		if crashCounts(tx, batch.Events) != nil {
			t.Error("suspects left after the batch was stored")
		}
		if b := tx.Bucket(inflightTable); b != nil && b.Stats().KeyN != 0 {
			t.Error("inflight mark left after the batch was stored")
		}
		return nil
	})
}

// TestPipelineCountsSkippedFromBatchStats: every source's skipped records
// reach encwatch_records_skipped_total through Batch.Stats.
func TestPipelineCountsSkippedFromBatchStats(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ob, _ := outbox.New(outbox.Options{DB: db, Queues: []outbox.Queue{{Sink: alert.NewStdout(&testkit.Buffer{})}}, Logger: zerolog.Nop()})
	p := &pipeline{db: db, outbox: ob, now: time.Now, metrics: newPipelineMetrics(prometheus.NewRegistry()), log: zerolog.Nop()}
	e, _ := rules.New(rules.DefaultPolicy(), nil)
	p.engine.Store(e)
	for _, src := range []string{"sqs", "kafka", "files"} {
		if err := p.handle(context.Background(), ingest.Batch{Source: src, Stats: ingest.Stats{Records: 1000, Candidates: 3}}); err != nil {
			t.Fatal(err)
		}
		if n := testutil.ToFloat64(p.metrics.skipped.WithLabelValues(src)); n != 997 {
			t.Errorf("%s: skipped %v, want 997", src, n)
		}
	}
}

// TestBackgroundJoinedWhenSourcesEnd: when every source ends by itself, the
// reload and window-expiry loops end with Run, before the state closes.
func TestBackgroundJoinedWhenSourcesEnd(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	copyFile(t, "../../fixtures/records/gp-delete.json", filepath.Join(dir, "a.json"))
	cfgPath := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(cfgPath, []byte(filesConfig(state, dir)+"reload: {watch: true, interval: 50ms}\n"), 0o600)
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	before := goleak.IgnoreCurrent()
	if err := Run(context.Background(), Options{Config: cfg, ConfigPath: cfgPath, Reload: make(chan struct{}), Stdout: &testkit.Buffer{}, Stderr: &testkit.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, before, goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"), goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// TestStateLayoutDocumented: every top-level table a daemon writes is
// listed, with its owner, in the layout comment of state.go.
func TestStateLayoutDocumented(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	copyFile(t, "../../fixtures/records/read-burst.jsonl", filepath.Join(dir, "a.jsonl"))
	copyFile(t, "../../fixtures/records/dir-put-kms-cmk.json", filepath.Join(dir, "b.json"))
	runToEnd(t, filesConfig(state, dir))
	db, err := bolt.Open(filepath.Join(state, "encwatch.db"), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	src, err := os.ReadFile("state.go")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, tb := range stateTables {
		known[string(tb)] = true
		if !strings.Contains(string(src), "//\t"+string(tb)+" ") {
			t.Errorf("table %s is not in the layout comment", tb)
		}
	}
	n := 0
	db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			n++
			if !known[string(name)] {
				t.Errorf("the daemon wrote table %q, which state.go does not describe", name)
			}
			return nil
		})
	})
	if n < 5 {
		t.Errorf("only %d tables written", n)
	}
}
