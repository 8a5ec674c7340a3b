package rules

import (
	"errors"
	"strings"
	"testing"

	"github.com/encwatch/encwatch/ingest"
)

func TestCustomCompileErrors(t *testing.T) {
	tests := []struct{ when, want string }{
		{`evnt.name == "x"`, "1:1: undeclared reference to 'evnt'"},
		{`event.actr.arn == ""`, "1:6: undefined field 'actr'"},
		{`bucket.name`, "it must give bool"},
		{`glob(bucket.name)`, "found no matching overload for 'glob'"},
		{`event.name == `, "Syntax error"},
	}
	for _, tt := range tests {
		_, err := Compile(CustomRule{ID: "mine", When: tt.when}, 0)
		var ce *CompileError
		if !errors.As(err, &ce) || ce.ID != "mine" || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want %q", tt.when, err, tt.want)
		}
	}
}

// TestCustomRulesInEngine: custom findings come with the built-in ones; a
// rule that exceeds its cost is stopped and reported, the others go on;
// what a record lacks reads as empty, not as an error.
func TestCustomRulesInEngine(t *testing.T) {
	heavy, err := Compile(CustomRule{ID: "heavy", Severity: Low, When: `[1,2,3,4,5,6,7,8,9,10].all(a, [1,2,3,4,5,6,7,8,9,10].all(b, [1,2,3,4,5,6,7,8,9,10].all(c, a+b+c > 0)))`}, 500)
	if err != nil {
		t.Fatal(err)
	}
	root, err := Compile(CustomRule{ID: "no-error-code", Severity: Critical, Summary: "s", When: `event.errorCode == "" && event.actor.arn == "" && bucket.zone == "" && size(encryption.rules) == 0`}, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := DefaultPolicy()
	p.Severity = map[string]Severity{"no-error-code": Info}
	e, err := New(p, nil, heavy, root)
	if err != nil {
		t.Fatal(err)
	}
	var failed []string
	e.OnRuleError(func(re *RuleError) {
		if re.Custom && errors.Is(re.Err, ErrCostExceeded) {
			failed = append(failed, re.Rule)
		}
	})
	ev := &ingest.Event{ID: "1", Name: ingest.DeleteBucketEncryption, Source: ingest.SourceS3, Bucket: ingest.Bucket{Name: "b", Type: ingest.BucketGeneralPurpose}}
	fs, err := e.Evaluate(ev)
	if err != nil {
		t.Fatal(err)
	}
	if len(fs) != 2 || fs[0].Rule != EncryptionDeleted || fs[1].Rule != "no-error-code" || fs[1].Severity != Info || fs[1].Summary != "s" {
		t.Errorf("findings %+v", fs)
	}
	if len(failed) != 1 || failed[0] != "heavy" {
		t.Errorf("cost failures %v, want [heavy]", failed)
	}
}

// FuzzCompile compiles arbitrary expressions: compiling must not panic or
// hang, an error must name the rule, and a rule that compiles must run on
// an event within its cost limit or fail cleanly.
func FuzzCompile(f *testing.F) {
	for _, w := range []string{
		`bucket.type == "directory" && event.actor.type == "Root"`,
		`encryption.rules.exists(r, r.algorithm == "AES256")`,
		`glob(bucket.name, "prod-*") && kmsKeyAccount(event.actor.arn) != ""`,
		`event.time.getHours("UTC") > 22`,
		`[1,2,3].all(x, x > 0)`,
		`isAlias(encryption.rules[0].kmsKeyId)`,
	} {
		f.Add(w)
	}
	ev := &ingest.Event{ID: "1", Name: ingest.PutBucketEncryption, Source: ingest.SourceS3, Bucket: ingest.Bucket{Name: "prod-1", Type: "directory"},
		Encryption: ingest.Encryption{Rules: []ingest.EncryptionRule{{Algorithm: "aws:kms", KMSKeyID: "alias/x"}}}}
	f.Fuzz(func(t *testing.T, when string) {
		c, err := Compile(CustomRule{ID: "fuzz", When: when}, 10000)
		if err != nil {
			if !strings.Contains(err.Error(), "rule fuzz") {
				t.Fatalf("error does not name the rule: %v", err)
			}
			return
		}
		c.Match(ev)
	})
}
