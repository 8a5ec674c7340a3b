package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/fixtures/awsemu"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

// statefulEstate writes three phases of trail files, one file per account
// and phase, whose findings depend on bucket state carried from one phase
// to the next: a directory bucket's key changed (phases 2 and 3), a key
// disabled under a bucket of its own account and under a bucket of
// another account (phase 2, the KMS event read in the key's account), and
// a read burst split across phases 1 and 2 (12 + 12 distinct buckets of
// one caller, the threshold being 20). It returns the files by phase.
func statefulEstate(t *testing.T, dir string, accounts int) [3][]string {
	t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	acct := func(i int) string { return fmt.Sprintf("2000000000%02d", i%accounts) }
	key := func(i int, name string) string {
		return fmt.Sprintf("arn:aws:kms:us-east-1:%s:key/%s-%02d", acct(i), name, i%accounts)
	}
	kmsRules := func(k string) string {
		return fmt.Sprintf(`{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms","KMSMasterKeyID":%q},"BucketKeyEnabled":true}`, k)
	}
	disable := func(id string, i int, k string, at time.Time) []byte {
		return testkit.Record{ID: id, Name: "DisableKey", Source: "kms.amazonaws.com", Account: acct(i), Time: at,
			Params: fmt.Sprintf(`{"keyId":%q}`, k)}.Build()
	}
	var phases [3][]string
	for ph := range 3 {
		at := t0.Add(time.Duration(ph) * 2 * time.Minute)
		for i := range accounts {
			a := acct(i)
			id := func(what string) string { return fmt.Sprintf("p%d-%s-%s", ph, a, what) }
			dirBucket := fmt.Sprintf("keys-%s--use1-az4--x-s3", a)
			var recs [][]byte
			put := func(what, bucket, k string) {
				recs = append(recs, testkit.Record{ID: id(what), Bucket: bucket, Account: a, Time: at, Rules: kmsRules(k)}.Build())
			}
			put("dir", dirBucket, key(i, fmt.Sprintf("dir%d", ph)))
			switch ph {
			case 0:
				put("gp", "own-"+a, key(i, "gp"))
				put("shared", "shared-"+a, key(i+1, "shared")) // the next account's key
			case 1:
				recs = append(recs, disable(id("disable-own"), i, key(i, "gp"), at.Add(time.Second)),
					disable(id("disable-shared"), i, key(i, "shared"), at.Add(2*time.Second)))
			}
			if ph < 2 {
				for j := range 12 {
					recs = append(recs, testkit.Record{ID: id(fmt.Sprintf("get%02d", j)), Name: "GetBucketEncryption",
						Bucket: fmt.Sprintf("read-%s-%d-%02d", a, ph, j), Account: a, Time: at.Add(time.Duration(j) * time.Second),
						Actor: "arn:aws:iam::" + a + ":role/scanner"}.Build())
				}
			}
			var body bytes.Buffer
			zw := gzip.NewWriter(&body)
			zw.Write([]byte(`{"Records":[` + string(bytes.Join(recs, []byte(","))) + `]}`))
			zw.Close()
			name := fmt.Sprintf("%s_CloudTrail_us-east-1_2026%d_%s.json.gz", a, ph, a)
			p := filepath.Join(dir, fmt.Sprintf("phase%d", ph), name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, body.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			phases[ph] = append(phases[ph], p)
		}
	}
	return phases
}

// replayIDs is what one encwatch judging every file in order alerts: the
// ids `encwatch replay --format json` prints.
func replayIDs(t *testing.T, files ...string) map[string]string {
	t.Helper()
	out, err := exec.Command(encwatchBinary(t), append([]string{"replay", "--format", "json", "--quiet"}, files...)...).Output()
	if err != nil && !strings.Contains(err.Error(), "exit status 1") {
		t.Fatalf("replay: %v", err)
	}
	ids := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var a alert.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("replay printed %q: %v", sc.Text(), err)
		}
		ids[a.ID] = a.Rule
	}
	return ids
}

var statefulRules = []string{"directory-kms-key-changed", "kms-key-unusable", "encryption-read-burst"}

// TestRepartitionAcrossTasks runs three tasks on one SQS queue with
// pipeline.repartition.kafka (kfake, 6 partitions): each account's events
// reach one task, so the stateful findings equal those of one encwatch
// reading every file in order (replay), with one task killed with SIGKILL
// while phase 2 is read (its partitions go to the others, which rebuild
// the state from the topic) and started again for phase 3. Without the
// repartition the same three tasks miss stateful findings: the control.
func TestRepartitionAcrossTasks(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three daemons against a Kafka broker")
	}
	dir := t.TempDir()
	const accounts = 12
	phases := statefulEstate(t, dir, accounts)
	var all []string
	for _, ph := range phases {
		all = append(all, ph...)
	}
	want := replayIDs(t, all...)
	stateful := 0
	for _, rule := range want {
		if slices.Contains(statefulRules, rule) {
			stateful++
		}
	}
	// 12 accounts: 2 key changes, 2 unusable keys and 1 burst each.
	if stateful != 5*accounts {
		t.Fatalf("replay raised %d stateful findings, want %d: %v", stateful, 5*accounts, want)
	}

	t.Run("repartitioned", func(t *testing.T) {
		got, resent := runTasks(t, phases, true)
		for id, rule := range want {
			if got[id] == 0 {
				t.Errorf("finding %s (%s) of a single encwatch was not delivered by the three tasks", id, rule)
			}
		}
		for id := range got {
			if _, ok := want[id]; !ok {
				t.Errorf("the tasks raised %s, which a single encwatch does not", id)
			}
		}
		t.Logf("%d findings (%d stateful) equal to one encwatch's; %d delivered twice with the same id", len(want), stateful, resent)
	})
	t.Run("control without repartition", func(t *testing.T) {
		got, _ := runTasks(t, phases, false)
		missed := 0
		for id, rule := range want {
			if slices.Contains(statefulRules, rule) && got[id] == 0 {
				missed++
			}
		}
		if missed == 0 {
			t.Error("three tasks without the repartition raised every stateful finding: the test cannot tell the difference")
		}
		t.Logf("without the repartition, %d of %d stateful findings were missed", missed, stateful)
	})
}

// runTasks plays the phases through an SQS queue read by three tasks and
// returns how often each alert id was printed, over all of them, and how
// many ids were printed more than once. With repartition, the first task
// is killed while phase 2 is read and started again before phase 3.
func runTasks(t *testing.T, phases [3][]string, repartition bool) (map[string]int, int) {
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(6, "encwatch-repartition"))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	w := awsemu.NewWorld()
	w.SQS.Delay = 0
	w.S3.Delay = 300 * time.Millisecond // a task holds its files for a while
	emu := httptest.NewServer(w)
	defer emu.Close()
	queue := emu.URL + "/111122223333/trail-logs"
	extra := ""
	if repartition {
		extra = fmt.Sprintf("pipeline:\n  repartition:\n    kafka: {brokers: [%q], topic: encwatch-repartition, sessionTimeout: 6s}\n", kc.ListenAddrs()[0])
	}
	states := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	start := func(i int) *daemonProc {
		cfg := filepath.Join(t.TempDir(), "encwatch.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources:
  sqs: {queueURL: %q, workers: 1, visibility: 3s, waitTime: 1s}
sinks: {stdout: {}}
%s`, states[i], queue, extra)), 0o600)
		return startDaemon(t, cfg, emu.URL)
	}
	var procs []*daemonProc
	for i := range 3 {
		procs = append(procs, start(i))
	}
	ids := func() map[string]int {
		n := map[string]int{}
		for _, p := range procs {
			got, _ := p.snapshot()
			for _, a := range got {
				n[a.ID]++
			}
		}
		return n
	}
	send := func(files []string) {
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			k := "AWSLogs/111122223333/CloudTrail/us-east-1/" + filepath.Base(filepath.Dir(f)) + "/" + filepath.Base(f)
			w.S3.Put("org-trail", k, b)
			w.SQS.Send(fmt.Sprintf(`{"s3Bucket":"org-trail","s3ObjectKey":[%q]}`, k))
			time.Sleep(100 * time.Millisecond) // one at a time: the tasks share them out
		}
	}
	// waitFor waits until every alert a single encwatch raises for the
	// files so far was printed by some task (without the repartition, until
	// the queue is empty and the outboxes had time to drain).
	waitFor := func(files []string) {
		t.Helper()
		want := replayIDs(t, files...)
		testkit.Eventually(t, 90*time.Second, func() bool {
			if left, _, _ := w.SQS.Counts(); left > 0 {
				return false
			}
			if !repartition {
				time.Sleep(2 * time.Second)
				return true
			}
			got := ids()
			for id := range want {
				if got[id] == 0 {
					return false
				}
			}
			return true
		}, "alerts of %d files", len(files))
	}
	send(phases[0])
	waitFor(phases[0])
	send(phases[1])
	if repartition {
		// Kill the first task while phase 2 is read: after the first
		// message of it was deleted, while others are still in the queue.
		testkit.Eventually(t, 30*time.Second, func() bool { _, deleted, _ := w.SQS.Counts(); return deleted > len(phases[0]) },
			"a phase 2 message deleted")
		left, _, _ := w.SQS.Counts()
		procs[0].cmd.Process.Kill()
		procs[0].wait()
		t.Logf("task 0 killed with %d phase 2 messages in the queue", left)
	}
	waitFor(append(slices.Clone(phases[0]), phases[1]...))
	if repartition {
		procs = append(procs, start(0)) // ECS starts it again, on its state
	}
	send(phases[2])
	waitFor(slices.Concat(phases[0], phases[1], phases[2]))
	for _, p := range procs {
		select {
		case <-p.exited:
		default:
			p.stop(t)
		}
	}
	replays := 0
	for _, p := range procs {
		_, logs := p.snapshot()
		for _, l := range logs {
			var line struct {
				Message     string `json:"message"`
				ReplayUntil int64  `json:"replay_until"`
			}
			if json.Unmarshal([]byte(l), &line) == nil && line.Message == "judging a repartition partition" && line.ReplayUntil >= 0 {
				replays++
			}
		}
	}
	if repartition && replays == 0 {
		t.Error("no task was given a partition another had judged: the handover was not tested")
	}
	got := ids()
	resent := 0
	for _, n := range got {
		if n > 1 {
			resent++
		}
	}
	redelivered := 0
	for _, n := range w.SQS.Receives() {
		if n > 1 {
			redelivered++
		}
	}
	t.Logf("%d of %d SQS messages were delivered more than once (their events published again); %d partitions taken over from another task, their state rebuilt from the topic",
		redelivered, len(w.SQS.Receives()), replays)
	return got, resent
}
