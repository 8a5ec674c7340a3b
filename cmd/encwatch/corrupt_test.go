package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/cmd/daemon"
	"github.com/encwatch/encwatch/fixtures/testkit"
)

// TestDamagedStateAtStart: a state file truncated to half, with garbage
// pages, or with both meta pages overwritten never makes encwatch panic:
// `encwatch run` exits 2 naming the file and the way out, and
// `encwatch state check` says it is damaged; a sound file passes the check.
func TestDamagedStateAtStart(t *testing.T) {
	state, files := t.TempDir(), t.TempDir()
	for i := range 300 {
		os.WriteFile(filepath.Join(files, fmt.Sprintf("%03d.json", i)),
			testkit.Record{ID: fmt.Sprintf("d-%03d", i), Name: "DeleteBucketEncryption", Bucket: fmt.Sprintf("b-%03d", i)}.Build(), 0o644)
	}
	cfgPath := writeFile(t, "c.yaml", fmt.Sprintf("state: {dir: %q}\nhttp: {listen: \"127.0.0.1:0\"}\nsources: {files: {paths: [%q], watch: false}}\nsinks: {stdout: {}}\n", state, files))
	cfg, err := config.Load(cfgPath, os.Environ())
	if err != nil {
		t.Fatal(err)
	}
	// Fill the state: checkpoints and 300 buckets' state.
	if err := daemon.Run(context.Background(), daemon.Options{Config: cfg, Stdout: &testkit.Buffer{}, Stderr: &testkit.Buffer{}}); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(state, "encwatch.db")
	sound, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if code, stdout, stderr := runCLI(t, "", "state", "check", "--config", cfgPath); code != exitOK || !strings.Contains(stdout, ": OK") {
		t.Fatalf("check of the sound file: %d %s %s", code, stdout, stderr)
	}
	garbage := func(b []byte, from, to int) {
		for i := from; i < to && i < len(b); i++ {
			b[i] = byte(i*7 + 3)
		}
	}
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"truncated to half", func(b []byte) []byte { return b[:len(b)/2] }},
		{"garbage pages", func(b []byte) []byte { garbage(b, 2*4096, 6*4096); return b }},
		{"both meta pages overwritten", func(b []byte) []byte { garbage(b, 0, 2*4096); return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(dbPath, tc.damage(append([]byte(nil), sound...)), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var out, errb testkit.Buffer
			code := run(ctx, []string{"run", "--config", cfgPath}, nil, &out, &errb)
			if code != exitUsage || !strings.Contains(errb.String(), dbPath) || !strings.Contains(errb.String(), "mv "+dbPath) {
				t.Errorf("run: exit %d, stderr:\n%s", code, errb.String())
			}
			if code, _, stderr := runCLI(t, "", "state", "check", "--config", cfgPath); code != 1 || !strings.Contains(stderr, "damaged") {
				t.Errorf("state check: exit %d, %s", code, stderr)
			}
		})
	}
}
