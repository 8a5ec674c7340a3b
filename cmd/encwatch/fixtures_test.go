package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/rules"
	"github.com/encwatch/encwatch/rules/ruletest"
)

// TestFixtureCases replays every case in fixtures/cases through
// `encwatch replay --format json` with the case's policy and checks that
// stdout holds exactly the expected findings, as alert v1 lines.
func TestFixtureCases(t *testing.T) {
	files, err := filepath.Glob("../../fixtures/cases/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no cases found: %v", err)
	}
	seen := map[string]bool{}
	for _, f := range files {
		c, err := ruletest.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(c.Name, func(t *testing.T) {
			args := []string{"replay", "--format", "json"}
			pol, err := c.PolicyYAML()
			if err != nil {
				t.Fatal(err)
			}
			if pol != "" {
				cfg := filepath.Join(t.TempDir(), "encwatch.yaml")
				indented := "policy:\n  " + strings.ReplaceAll(strings.TrimRight(pol, "\n"), "\n", "\n  ") + "\n"
				if err := os.WriteFile(cfg, []byte(indented), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--config", cfg)
			}
			args = append(args, c.EventPaths()...)
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, nil, &stdout, &stderr)
			if code != exitOK {
				t.Fatalf("exit %d; stderr:\n%s", code, stderr.String())
			}
			if strings.Contains(stderr.String(), "bad input") {
				t.Errorf("fixtures must decode cleanly; stderr:\n%s", stderr.String())
			}
			got := parseAlerts(t, stdout.Bytes())
			var found []ruletest.Expectation
			for _, a := range got {
				found = append(found, ruletest.Expectation{Event: a.Event.ID, Rule: a.Rule, Severity: a.Severity})
				seen[a.Rule] = true
				if a.Event.Name == "PutBucketEncryption" && a.Encryption == nil && a.Rule != rules.EncryptionConfigUnreadable {
					t.Errorf("%s on a Put carries no encryption block", a.Rule)
				}
			}
			if missing, extra := ruletest.Diff(c.Expect, found); len(missing)+len(extra) > 0 {
				t.Errorf("findings differ from %s:\n%s", c.Path, ruletest.FormatDiff(missing, extra))
			}
		})
	}
	for _, r := range rules.Catalogue {
		if !seen[r.ID] {
			t.Errorf("no fixture case raises %s", r.ID)
		}
	}
}

// parseAlerts reads alert v1 JSON lines and fails on anything else.
func parseAlerts(t *testing.T, out []byte) []alert.Alert {
	t.Helper()
	var alerts []alert.Alert
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var a alert.Alert
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			t.Fatalf("stdout line is not an alert: %v\n%s", err, sc.Text())
		}
		if a.Schema != alert.Schema || a.ID == "" || a.Bucket.Name == "" || a.Bucket.ARN == "" || a.DetectedAt.IsZero() {
			t.Errorf("alert misses required fields: %s", sc.Text())
		}
		alerts = append(alerts, a)
	}
	return alerts
}
