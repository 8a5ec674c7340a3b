package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/encwatch/encwatch/cmd/config"
)

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
		var out testkit.Buffer
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

// TestReload replaces the policy while alerts flow: later events follow
// the new policy, nothing is lost or repeated, and a broken configuration
// does not replace a good one.
func TestReload(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(t.TempDir(), "encwatch.yaml")
	base := fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources: {files: {paths: [%q], watch: true, interval: 100ms}}
sinks: {stdout: {}}
`, t.TempDir(), dir)
	write := func(extra string) {
		if err := os.WriteFile(cfgPath, []byte(base+extra), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	cfg, err := config.Load(cfgPath, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out testkit.Buffer
	var logs testkit.Buffer
	reload := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, ConfigPath: cfgPath, Reload: reload, Stdout: &out, Stderr: &logs, OnReady: func(a string) { addr <- a }})
	}()
	a := <-addr
	waitLines := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if strings.Count(out.String(), "\n") >= n {
				return
			}
		}
		t.Fatalf("waited for %d alerts, have:\n%s\nlog:\n%s", n, out.String(), logs.String())
	}
	settle := func() { time.Sleep(500 * time.Millisecond) }
	// 1. Default policy: AES256 on a general purpose bucket is not allowed.
	copyFile(t, "../../fixtures/records/gp-put-aes256.json", filepath.Join(dir, "1.json"))
	waitLines(1)
	// 2. A policy that allows AES256 everywhere, and a custom rule.
	write(`policy: {generalPurposeBuckets: {allowedAlgorithms: [AES256, aws:kms]}}
customRules: [{id: any-put, severity: info, summary: put seen, when: 'event.name == "PutBucketEncryption"'}]
`)
	reload <- struct{}{}
	settle()
	copyFile(t, "../../fixtures/records/gp-logs-put-aes256.json", filepath.Join(dir, "2.json"))
	waitLines(2)
	settle()
	// 3. A broken configuration: rejected, the policy of step 2 stays.
	write("policy: {severity: {no-such-rule: high}}\n")
	reload <- struct{}{}
	settle()
	copyFile(t, "../../fixtures/records/legacy-v103-host-array.json", filepath.Join(dir, "3.json"))
	waitLines(3)
	settle()
	resp, err := http.Get("http://" + a + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var al struct {
			Rule  string
			Event struct{ ID string }
		}
		json.Unmarshal([]byte(line), &al)
		got = append(got, al.Event.ID[len(al.Event.ID)-3:]+" "+al.Rule)
	}
	want := "102 algorithm-not-allowed,122 any-put,301 any-put"
	if strings.Join(got, ",") != want {
		t.Errorf("alerts %v, want %s", got, want)
	}
	for _, m := range []string{`encwatch_config_reloads_total{result="success"} 1`, `encwatch_config_reloads_total{result="failure"} 1`} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("metrics lack %s", m)
		}
	}
	if !strings.Contains(logs.String(), "reload rejected") || !strings.Contains(logs.String(), "no-such-rule") {
		t.Errorf("the rejected reload is not logged with its reason")
	}
}
