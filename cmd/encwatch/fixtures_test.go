package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/rules"
	"github.com/encwatch/encwatch/rules/ruletest"
	"go.yaml.in/yaml/v3"
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
			if cfg := caseConfig(t, c); cfg != "" {
				args = append(args, "--config", cfg)
			}
			args = append(args, c.EventPaths()...)
			if inline := inlineEvents(t, c); inline != "" {
				args = append(args, inline)
			}
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
				found = append(found, ruletest.Expectation{Event: a.Event.ID, Rule: a.Rule, Severity: a.Severity, Count: a.Count})
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
		if !seen[r.ID] && !r.Inventory { // inventory rules: rules/inventory_test.go
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

// caseConfig writes a configuration holding a case's policy and custom
// rules, or returns "" when the case has neither.
func caseConfig(t *testing.T, c *ruletest.Case) string {
	t.Helper()
	pol, err := c.PolicyYAML()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if pol != "" {
		b.WriteString("policy:\n  " + strings.ReplaceAll(strings.TrimRight(pol, "\n"), "\n", "\n  ") + "\n")
	}
	if len(c.CustomRules) > 0 {
		raw, err := yaml.Marshal(map[string]any{"customRules": c.CustomRules})
		if err != nil {
			t.Fatal(err)
		}
		b.Write(raw)
	}
	if b.Len() == 0 {
		return ""
	}
	p := filepath.Join(t.TempDir(), "encwatch.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// inlineEvents writes a case's inline records to a JSON-lines file.
func inlineEvents(t *testing.T, c *ruletest.Case) string {
	t.Helper()
	var b bytes.Buffer
	for _, e := range c.Events {
		if e.Inline != nil {
			b.Write(e.Inline)
			b.WriteByte('\n')
		}
	}
	if b.Len() == 0 {
		return ""
	}
	p := filepath.Join(t.TempDir(), "inline.jsonl")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRulesTestCommand runs the shipped cases with `encwatch rules test`,
// and a broken copy, which must fail with a readable diff.
func TestRulesTestCommand(t *testing.T) {
	files, _ := filepath.Glob("../../fixtures/cases/*.yaml")
	code, stdout, _ := runCLI(t, "", append([]string{"rules", "test"}, files...)...)
	if code != exitOK || !strings.Contains(stdout, fmt.Sprintf("%d passed, 0 failed", len(files))) {
		t.Fatalf("exit %d:\n%s", code, stdout)
	}
	b, err := os.ReadFile("../../fixtures/cases/root-principal.yaml")
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs("../../fixtures/records")
	broken := strings.ReplaceAll(string(b), "../records", abs)
	broken = strings.Replace(broken, "rule: root-principal, severity: high}", "rule: root-principal, severity: low}", 1)
	p := filepath.Join(t.TempDir(), "broken.yaml")
	os.WriteFile(p, []byte(broken), 0o600)
	code, stdout, _ = runCLI(t, "", "rules", "test", p)
	if code != exitFindings || !strings.Contains(stdout, "- missing:    00000000-0000-4000-8000-000000000112 root-principal low") ||
		!strings.Contains(stdout, "+ unexpected: 00000000-0000-4000-8000-000000000112 root-principal high") {
		t.Errorf("broken case: exit %d\n%s", code, stdout)
	}
}
