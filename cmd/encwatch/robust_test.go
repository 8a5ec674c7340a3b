package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/corpus"
	"github.com/encwatch/encwatch/rules"
	"github.com/encwatch/encwatch/rules/ruletest"
)

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestReplayBurstWithRuleDisabled is the crash of issue 13: one caller
// reading the encryption of 21 buckets within 3 minutes, with
// encryption-read-burst disabled. Replay must finish, print only whole
// JSON lines, and report no rule error.
func TestReplayBurstWithRuleDisabled(t *testing.T) {
	cfg := writeFile(t, "c.yaml", "policy:\n  disabled: [encryption-read-burst]\n")
	code, stdout, stderr := runCLI(t, "", "replay", "--config", cfg, "--format", "json", rec+"read-burst.jsonl")
	if code != exitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	for i, line := range strings.Split(strings.TrimSuffix(stdout, "\n"), "\n") {
		if line != "" && !json.Valid([]byte(line)) {
			t.Errorf("stdout line %d is not whole JSON: %q", i+1, line)
		}
	}
	if strings.Contains(stderr, "rule errors") || strings.Contains(stderr, "panic") {
		t.Errorf("stderr reports failures:\n%s", stderr)
	}
	// And with the rule on, the same reads raise their burst.
	_, stdout, _ = runCLI(t, "", "replay", "--format", "json", rec+"read-burst.jsonl")
	if !strings.Contains(stdout, `"rule":"encryption-read-burst"`) {
		t.Errorf("with the rule on, no burst: %s", stdout)
	}
}

// TestGeneratedCorpusEachStatefulRuleDisabled replays the generated corpora
// with each stateful rule disabled in turn: the findings are the declared
// ones less that rule's, and no rule fails.
func TestGeneratedCorpusEachStatefulRuleDisabled(t *testing.T) {
	mgmt, data := t.TempDir(), t.TempDir()
	mm, err := corpus.Generate(corpus.Options{Dir: mgmt, Seed: 3, Bytes: 6 << 20, EncryptionEvery: 40, ConfuserEvery: 60, Bursts: 3, KeyChanges: 3})
	if err != nil {
		t.Fatal(err)
	}
	dm, err := corpus.Generate(corpus.Options{Dir: data, Seed: 5, Bytes: 4 << 20, EncryptionEvery: 400, DataNoiseEvery: 5, OverrideGroups: 4, CopyGroups: 3})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range rules.Catalogue {
		if !d.Stateful || d.Inventory { // no trail file raises an inventory rule
			continue
		}
		t.Run(d.ID, func(t *testing.T) {
			dir, m := mgmt, mm
			if strings.HasPrefix(d.ID, "object-") || strings.HasSuffix(d.ID, "copy-cost") {
				dir, m = data, dm
			}
			if m.ByRule[d.ID] == 0 {
				t.Fatalf("the corpus holds no %s finding to remove", d.ID)
			}
			cfg := writeFile(t, "c.yaml", fmt.Sprintf("policy:\n  disabled: [%s]\n", d.ID))
			var out, errb bytes.Buffer
			if code := run(context.Background(), []string{"replay", "--config", cfg, "--format", "json", filepath.Join(dir, "AWSLogs")}, nil, &out, &errb); code != exitOK {
				t.Fatalf("exit %d: %s", code, errb.String())
			}
			if strings.Contains(errb.String(), "rule errors") {
				t.Errorf("rule errors: %s", errb.String())
			}
			var got, want []ruletest.Expectation
			for _, a := range parseAlerts(t, out.Bytes()) {
				got = append(got, ruletest.Expectation{Event: a.Event.ID, Rule: a.Rule, Count: a.Count})
			}
			for _, f := range m.Findings {
				if f.Rule != d.ID {
					want = append(want, ruletest.Expectation{Event: f.EventID, Rule: f.Rule, Count: f.Count})
				}
			}
			if missing, extra := ruletest.Diff(want, got); len(missing)+len(extra) > 0 {
				t.Errorf("%d findings expected, %d raised:\n%s", len(want), len(got), ruletest.FormatDiff(missing, extra))
			}
		})
	}
}

// TestRulesTestHonoursCostLimit: `rules test` compiles custom rules with
// limits.customRuleCost, from the case or from --config, as the daemon does.
func TestRulesTestHonoursCostLimit(t *testing.T) {
	rule := `    when: 'encryption.rules.exists(r, r.algorithm.startsWith("aws:") && r.kmsKeyId.contains("key") && r.kmsKeyId.endsWith("z"))'`
	caseFile := func(limits string) string {
		return writeFile(t, "case.yaml", `name: cost
events: [`+filepath.Join(mustAbs(t, rec), "gp-put-kms-cmk.json")+`]
customRules:
  - id: heavy
    severity: low
`+rule+`
`+limits+`
expect: []
`)
	}
	code, stdout, _ := runCLI(t, "", "rules", "test", caseFile(""))
	if code != exitOK {
		t.Fatalf("default limit: exit %d\n%s", code, stdout)
	}
	code, stdout, _ = runCLI(t, "", "rules", "test", caseFile("limits: {customRuleCost: 2}"))
	if code != exitUsage || !strings.Contains(stdout, "cost limit") {
		t.Errorf("case limit 2: exit %d\n%s", code, stdout)
	}
	cfg := writeFile(t, "c.yaml", "limits: {customRuleCost: 2}\n")
	code, stdout, _ = runCLI(t, "", "rules", "test", "--config", cfg, caseFile(""))
	if code != exitUsage || !strings.Contains(stdout, "cost limit") {
		t.Errorf("--config limit 2: exit %d\n%s", code, stdout)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDaemonBurstWithRuleDisabled runs the scenario of issue 13 through the
// daemon binary: the burst of reads with encryption-read-burst disabled,
// then a Delete. The daemon judges both, exits 0 when its sources are done,
// and a restart on the same state exits 0 again and repeats nothing (it
// used to panic on the batch, and again at every restart).
func TestDaemonBurstWithRuleDisabled(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	for _, f := range []string{"read-burst.jsonl", "gp-delete.json"} {
		b, err := os.ReadFile(rec + f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeFile(t, "c.yaml", fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources: {files: {paths: [%q], watch: false}}
sinks: {stdout: {}}
policy: {disabled: [encryption-read-burst]}
`, state, dir))
	runOnce := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, encwatchBinary(t), "run", "--config", cfg)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("encwatch run: %v\nstderr:\n%s", err, errb.String())
		}
		if strings.Contains(errb.String(), "panic") || strings.Contains(errb.String(), "rule failed") {
			t.Errorf("the log reports a failure:\n%s", errb.String())
		}
		return out.String()
	}
	out := runOnce()
	if !strings.Contains(out, `"rule":"encryption-deleted"`) || strings.Contains(out, "encryption-read-burst") {
		t.Errorf("first run's alerts:\n%s", out)
	}
	if out := runOnce(); out != "" {
		t.Errorf("the restart repeated alerts:\n%s", out)
	}
}
