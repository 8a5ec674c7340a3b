package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	"github.com/encwatch/encwatch/fixtures/testkit"
)

// TestOCSFOutputsAgainstSchema: every finding replay prints for the
// fixture records, and every finding of a scan, as OCSF, passes the schema
// check.
func TestOCSFOutputsAgainstSchema(t *testing.T) {
	schema := testkit.LoadOCSF(t, "../../../shared/ref/ocsf-schema")
	class := schema.Class(t, "findings/detection_finding.json")
	var counts testkit.OCSFCounts
	check := func(what, out string) (int, map[string]bool) {
		n, ruleSet := 0, map[string]bool{}
		for sc := bufio.NewScanner(strings.NewReader(out)); sc.Scan(); n++ {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Fatalf("%s: not JSON: %s", what, sc.Text())
			}
			for _, p := range schema.Check(t, class, ev, &counts) {
				t.Errorf("%s: %s", what, p)
			}
			ruleSet[ev["finding_info"].(map[string]any)["analytic"].(map[string]any)["name"].(string)] = true
		}
		return n, ruleSet
	}
	code, out, errs := runCLI(t, "", "replay", "--format", "ocsf", rec)
	if code != exitOK {
		t.Fatalf("replay: exit %d: %s", code, errs)
	}
	n, rs := check("replay", out)
	if n < 50 || len(rs) < 15 {
		t.Errorf("replay: %d findings of %d rules; the fixtures give more", n, len(rs))
	}
	scanWorld(t)
	code, out, errs = runCLI(t, "", "scan", "--regions", "us-east-1", "--format", "ocsf")
	if code != exitOK {
		t.Fatalf("scan: exit %d: %s", code, errs)
	}
	m, _ := check("scan", out)
	if m != 4 {
		t.Errorf("scan: %d findings, want 4", m)
	}
	t.Logf("OCSF: %d findings of %d rules from replay, %d from a scan: %d attributes, %d objects, %d enum values checked",
		n, len(rs), m, counts.Attributes, counts.Objects, counts.Enums)
}
