package alert_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/fixtures/testkit"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

const ocsfSchema = "../../shared/ref/ocsf-schema"

// inventoryFinding is a finding of a scan: no actor, basis inventory.
func inventoryFinding() rules.Finding {
	at := time.Date(2026, 3, 2, 11, 0, 0, 0, time.UTC)
	b := ingest.NewBucket("legacy-uploads", "444455556666", "us-east-1")
	ev := ingest.NewInventoryRead(b, ingest.Encryption{Present: true, Rules: []ingest.EncryptionRule{{Algorithm: "AES256", BlockedEncryptionTypes: []string{"NONE"}}}},
		ingest.KeyInfo{}, at, ingest.InventoryOrigin("444455556666", "us-east-1"))
	return rules.Finding{Rule: rules.SSECUnblocked, Severity: rules.High, Summary: "the configuration of general-purpose bucket legacy-uploads has BlockedEncryptionTypes NONE",
		Remediation: rules.Lookup(rules.SSECUnblocked).Remediation, Event: ev}
}

// TestOCSFAgainstSchema checks every rendering finding as an OCSF Detection
// Finding against the schema snapshot: required attributes, types, enums,
// profiles; and keeps them as golden files.
func TestOCSFAgainstSchema(t *testing.T) {
	schema := testkit.LoadOCSF(t, ocsfSchema)
	class := schema.Class(t, "findings/detection_finding.json")
	detected := time.Date(2026, 3, 2, 10, 0, 5, 0, time.UTC)
	var out bytes.Buffer
	w := alert.NewOCSFWriter(&out, "1.2.3")
	var counts testkit.OCSFCounts
	for _, f := range append(renderFindings(), inventoryFinding()) {
		a := alert.New(f, detected)
		if err := w.Write(a); err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(alert.OCSF(a, "1.2.3"))
		var ev map[string]any
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(err)
		}
		for _, p := range schema.Check(t, class, ev, &counts) {
			t.Errorf("%s (%s): %s", a.ID, a.Rule, p)
		}
		if ev["class_uid"].(float64) != 2004 || ev["finding_info"].(map[string]any)["uid"] != a.ID {
			t.Errorf("class %v, finding_info.uid %v", ev["class_uid"], ev["finding_info"])
		}
		var back alert.Alert
		raw, _ := json.Marshal(ev["unmapped"].(map[string]any)["alert"])
		if err := json.Unmarshal(raw, &back); err != nil || back.ID != a.ID || back.Summary != a.Summary {
			t.Errorf("unmapped.alert is not the alert v1 object: %v", err)
		}
	}
	w.Flush()
	testkit.Golden(t, "ocsf.jsonl", out.Bytes())
	t.Logf("checked %d findings: %d attributes, %d objects, %d enum values", counts.Findings, counts.Attributes, counts.Objects, counts.Enums)
}

// TestOCSFCheckerFails: the checker finds a missing required attribute, a
// wrong type, a value outside an enum and a profile attribute without its
// profile, so its passing means something.
func TestOCSFCheckerFails(t *testing.T) {
	schema := testkit.LoadOCSF(t, ocsfSchema)
	class := schema.Class(t, "findings/detection_finding.json")
	b, _ := json.Marshal(alert.OCSF(alert.New(renderFindings()[0], time.Now()), "x"))
	for name, spoil := range map[string]func(map[string]any){
		"no finding_info":    func(m map[string]any) { delete(m, "finding_info") },
		"time as a string":   func(m map[string]any) { m["time"] = "yesterday" },
		"severity_id 42":     func(m map[string]any) { m["severity_id"] = 42 },
		"actor, no profiles": func(m map[string]any) { m["metadata"].(map[string]any)["profiles"] = []any{"cloud"} },
		"unknown attribute":  func(m map[string]any) { m["bucket"] = "x" },
	} {
		var ev map[string]any
		json.Unmarshal(b, &ev)
		spoil(ev)
		j, _ := json.Marshal(ev)
		json.Unmarshal(j, &ev)
		if probs := schema.Check(t, class, ev, &testkit.OCSFCounts{}); len(probs) == 0 {
			t.Errorf("%s: no problem found", name)
		}
	}
}

// TestFormattedSink: a sink with format ocsf sends the OCSF Detection
// Finding as its body.
func TestFormattedSink(t *testing.T) {
	var buf bytes.Buffer
	s := alert.Formatted{Sink: alert.NewStdout(&buf), Format: alert.FormatOCSF, Version: "9"}
	a := alert.New(renderFindings()[0], time.Now())
	body, _ := json.Marshal(a)
	if err := s.Send(t.Context(), alert.Delivery{Alert: a, Body: body}); err != nil {
		t.Fatal(err)
	}
	var ev struct {
		ClassUID    int                  `json:"class_uid"`
		FindingInfo struct{ UID string } `json:"finding_info"`
		Metadata    struct{ Product struct{ Version string } }
	}
	if err := json.Unmarshal(buf.Bytes(), &ev); err != nil || ev.ClassUID != 2004 || ev.FindingInfo.UID != a.ID || ev.Metadata.Product.Version != "9" || s.Name() != "stdout" {
		t.Errorf("sent %s (%v)", buf.String(), err)
	}
}
