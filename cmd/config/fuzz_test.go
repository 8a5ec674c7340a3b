package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse feeds arbitrary YAML to the configuration loader: it must not
// panic, and every failure must be a list of problems that say where.
func FuzzParse(f *testing.F) {
	f.Add([]byte(full))
	for _, p := range []string{"../../deploy/examples/*.yaml", "../encwatch/testdata/*.yaml"} {
		files, _ := filepath.Glob(p)
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte("sources: {lookup: {regions: [x]}}\npolicy: {severity: {a: b}}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("fuzz.yaml", data, []string{"ENCWATCH_LOG_LEVEL=debug"})
		if err == nil {
			return
		}
		ce, ok := err.(*Error)
		if !ok || len(ce.Problems) == 0 {
			t.Fatalf("error is not a problem list: %T %v", err, err)
		}
		for _, p := range ce.Problems {
			if p.File != "fuzz.yaml" || p.Msg == "" {
				t.Fatalf("problem without place or message: %+v", p)
			}
		}
	})
}
