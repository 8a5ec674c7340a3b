package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/encwatch/encwatch/fixtures/corpus"
	"github.com/encwatch/encwatch/rules/ruletest"
)

// TestGeneratedCorpus replays a generated organisation-trail corpus, rich in
// encryption events of every variant and in confusers, and requires exactly
// the findings the generator declares: every one, and nothing else.
func TestGeneratedCorpus(t *testing.T) {
	dir := t.TempDir()
	m, err := corpus.Generate(corpus.Options{Dir: dir, Seed: 7, Bytes: 24 << 20, EncryptionEvery: 40, ConfuserEvery: 60, Bursts: 4, KeyChanges: 6})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"replay", "--format", "json", filepath.Join(dir, "AWSLogs")}, nil, &out, &errb)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var got, want []ruletest.Expectation
	for _, a := range parseAlerts(t, out.Bytes()) {
		got = append(got, ruletest.Expectation{Event: a.Event.ID, Rule: a.Rule})
	}
	for _, f := range m.Findings {
		want = append(want, ruletest.Expectation{Event: f.EventID, Rule: f.Rule})
	}
	if missing, extra := ruletest.Diff(want, got); len(missing)+len(extra) > 0 {
		t.Errorf("%d findings expected, %d raised:\n%s", len(want), len(got), ruletest.FormatDiff(missing, extra))
	}
	for _, rule := range []string{"algorithm-not-allowed", "directory-algorithm-unsupported", "directory-kms-key-alias", "kms-aws-managed-key",
		"kms-key-region-mismatch", "directory-kms-key-changed", "bucket-key-disabled", "encryption-change-failed", "root-principal",
		"encryption-read-burst", "encryption-config-unreadable", "encryption-deleted", "sse-c-unblocked", "kms-key-foreign-account", "kms-key-unusable"} {
		if m.ByRule[rule] == 0 {
			t.Errorf("the corpus holds no %s case; raise its share", rule)
		}
	}
	s := regexp.MustCompile(`(\d+) records, (\d+) encryption events`).FindStringSubmatch(errb.String())
	if s == nil {
		t.Fatalf("no summary: %s", errb.String())
	}
	if recs, _ := strconv.Atoi(s[1]); int64(recs) != m.Records {
		t.Errorf("replay counted %s records, the corpus has %d", s[1], m.Records)
	}
	if evs, _ := strconv.Atoi(s[2]); evs != m.EncryptionEvents {
		t.Errorf("replay found %d encryption events, the corpus has %d", evs, m.EncryptionEvents)
	}
	t.Log(fmt.Sprintf("%d files, %d records, %d encryption events, %d confusers, %d findings", m.Files, m.Records, m.EncryptionEvents, m.Confusers, len(m.Findings)))
}

// TestGeneratedCorpusDataEvents replays a corpus rich in data events: every
// group of overrides or KMS copies gives one alert, with the right first
// event and count, and ordinary data events give none.
func TestGeneratedCorpusDataEvents(t *testing.T) {
	dir := t.TempDir()
	m, err := corpus.Generate(corpus.Options{Dir: dir, Seed: 11, Bytes: 12 << 20, EncryptionEvery: 400, DataNoiseEvery: 5, OverrideGroups: 9, CopyGroups: 6})
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"replay", "--format", "json", filepath.Join(dir, "AWSLogs")}, nil, &out, &errb); code != exitOK {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var got, want []ruletest.Expectation
	for _, a := range parseAlerts(t, out.Bytes()) {
		got = append(got, ruletest.Expectation{Event: a.Event.ID, Rule: a.Rule, Count: a.Count})
	}
	for _, f := range m.Findings {
		want = append(want, ruletest.Expectation{Event: f.EventID, Rule: f.Rule, Count: f.Count})
	}
	if missing, extra := ruletest.Diff(want, got); len(missing)+len(extra) > 0 {
		t.Errorf("%d findings expected, %d raised:\n%s", len(want), len(got), ruletest.FormatDiff(missing, extra))
	}
	if m.ByRule["object-encryption-override"] != 9 || m.ByRule["directory-kms-copy-cost"] != 6 {
		t.Errorf("corpus groups: %v", m.ByRule)
	}
}
