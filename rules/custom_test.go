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
	e.OnCustomError(func(rule string, err error) {
		if errors.Is(err, ErrCostExceeded) {
			failed = append(failed, rule)
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
