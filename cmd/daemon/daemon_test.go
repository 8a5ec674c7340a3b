package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/encwatch/encwatch/cmd/config"
)

// syncBuffer is a bytes.Buffer safe for the daemon's writer and the test's
// reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Minute) // settled
	os.Chtimes(to, old, old)
}

// TestFilesWatchAndHealth runs the daemon in-process on a watched folder:
// files present at start and files added later are judged once, /healthz,
// /readyz and /metrics answer, and a restart repeats no file.
func TestFilesWatchAndHealth(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, "../../fixtures/records/gp-delete.json", filepath.Join(dir, "a.json"))
	cfg, err := config.Parse("test", []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources: {files: {paths: [%q], watch: true, interval: 200ms}}
sinks: {stdout: {}}
`, t.TempDir(), dir)), nil)
	if err != nil {
		t.Fatal(err)
	}
	run := func(until func(out string) bool) (string, string) {
		var out syncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		addr := make(chan string, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Options{Config: cfg, Stdout: &out, Stderr: io.Discard, OnReady: func(a string) { addr <- a }})
		}()
		a := <-addr
		for deadline := time.Now().Add(10 * time.Second); !until(out.String()) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
			resp, err := http.Get("http://" + a + path)
			if err != nil || resp.StatusCode != 200 {
				t.Errorf("%s: %v %v", path, err, resp)
			}
			if resp != nil {
				resp.Body.Close()
			}
		}
		metrics, _ := http.Get("http://" + a + "/metrics")
		mb, _ := io.ReadAll(metrics.Body)
		metrics.Body.Close()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		return out.String(), string(mb)
	}
	out, metrics := run(func(out string) bool {
		if strings.Count(out, "\n") == 1 && !fileExists(filepath.Join(dir, "b.json")) {
			copyFile(t, "../../fixtures/records/dir-put-dsse.json", filepath.Join(dir, "b.json"))
		}
		return strings.Count(out, "\n") >= 2
	})
	var rules []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var a struct{ Rule string }
		json.Unmarshal([]byte(line), &a)
		rules = append(rules, a.Rule)
	}
	if strings.Join(rules, ",") != "encryption-deleted,directory-algorithm-unsupported" {
		t.Errorf("alerts %v", rules)
	}
	for _, m := range []string{`encwatch_findings_total{rule="encryption-deleted",severity="high"} 1`, `encwatch_alerts_sent_total{sink="stdout"} 2`, "encwatch_build_info"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	// A restart on the same state repeats nothing.
	out, _ = run(func(string) bool { time.Sleep(600 * time.Millisecond); return true })
	if out != "" {
		t.Errorf("restart repeated alerts: %s", out)
	}
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
