package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"
)

// alertmanagerProc is Debian's prometheus-alertmanager, run by a test with
// its own storage, routing every alert (grouped by alert_id) to a webhook.
type alertmanagerProc struct {
	bin, cfg, storage, addr string
	cmd                     *exec.Cmd
}

func (am *alertmanagerProc) start(t *testing.T) {
	t.Helper()
	am.cmd = exec.Command(am.bin, "--config.file="+am.cfg, "--storage.path="+am.storage, "--web.listen-address="+am.addr,
		"--cluster.listen-address=", "--log.level=warn")
	am.cmd.Stderr = os.Stderr
	if err := am.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, func() bool {
		resp, err := http.Get("http://" + am.addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "alertmanager did not become ready")
}

func (am *alertmanagerProc) stop() {
	if am.cmd != nil && am.cmd.Process != nil {
		am.cmd.Process.Kill()
		am.cmd.Wait()
	}
}

// TestAlertmanagerSink: a real Alertmanager receives every finding the
// daemon raises, once per alert_id, routes it on to a webhook, and amtool
// shows it; stopped mid-run and started again, nothing is missing.
func TestAlertmanagerSink(t *testing.T) {
	bin := testkit.Need(t, "prometheus-alertmanager", "prometheus-alertmanager")
	amtool := testkit.Need(t, "amtool", "prometheus-alertmanager")
	var mu sync.Mutex
	routed := map[string]int{}
	rx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var msg struct {
			Alerts []struct {
				Status string
				Labels map[string]string
			}
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &msg); err == nil {
			mu.Lock()
			for _, a := range msg.Alerts {
				if a.Status == "firing" {
					routed[a.Labels["alert_id"]]++
				}
			}
			mu.Unlock()
		}
	}))
	t.Cleanup(rx.Close)
	dir := t.TempDir()
	am := &alertmanagerProc{bin: bin, cfg: filepath.Join(dir, "am.yml"), storage: filepath.Join(dir, "data"), addr: testkit.FreeAddr(t)}
	os.WriteFile(am.cfg, []byte(fmt.Sprintf(`route:
  receiver: hook
  group_by: [alert_id]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: hook
    webhook_configs: [{url: %q, send_resolved: false}]
`, rx.URL)), 0o600)
	am.start(t)
	t.Cleanup(am.stop)

	// Half the fixture records at start, the other half while Alertmanager is down.
	records, _ := filepath.Glob("../../fixtures/records/*.json")
	sort.Strings(records)
	watched := filepath.Join(dir, "trail")
	os.MkdirAll(watched, 0o755)
	copyRecords := func(rs []string) {
		for _, r := range rs {
			b, _ := os.ReadFile(r)
			os.WriteFile(filepath.Join(watched, filepath.Base(r)), b, 0o644)
		}
	}
	half := len(records) / 2
	copyRecords(records[:half])
	cfg := filepath.Join(dir, "encwatch.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0", externalURL: "https://encwatch.example.com"}
log: {level: info}
sources:
  files: {paths: [%q], watch: true, interval: 1s}
sinks:
  stdout: {}
  alertmanager: [{name: am, url: "http://%s", resolveAfter: 2h}]
`, filepath.Join(dir, "state"), watched, am.addr)), 0o600)
	d := startDaemon(t, cfg, "http://127.0.0.1:1")
	t.Cleanup(func() { d.cmd.Process.Kill(); d.wait() })
	delivered := func() map[string]bool {
		got, _ := d.snapshot()
		ids := map[string]bool{}
		for _, a := range got {
			ids[a.ID] = true
		}
		return ids
	}
	allRouted := func() bool {
		ids := delivered()
		mu.Lock()
		defer mu.Unlock()
		for id := range ids {
			if routed[id] == 0 {
				return false
			}
		}
		return len(ids) > 0
	}
	// The first half is done when every finding was routed and no new one
	// came for 3 s.
	settled := func() func() bool {
		last, since := -1, time.Now()
		return func() bool {
			if n := len(delivered()); n != last {
				last, since = n, time.Now()
			}
			return allRouted() && time.Since(since) > 3*time.Second
		}
	}
	testkit.Eventually(t, 40*time.Second, settled(), "Alertmanager did not route every finding of the first half")
	before := delivered()
	first := len(before)
	shownBefore := amtoolCheck(t, amtool, am.addr, before)

	am.stop()
	copyRecords(records[half:])
	testkit.Eventually(t, 20*time.Second, func() bool { return len(delivered()) > first }, "no finding from the second half")
	time.Sleep(2 * time.Second) // deliveries fail and back off meanwhile
	am.start(t)
	testkit.Eventually(t, 60*time.Second, allRouted, "after the outage, Alertmanager did not get every finding")
	// Alertmanager keeps alerts in memory: after its restart it shows the
	// ones sent since, each once (the earlier ones were routed already).
	after := map[string]bool{}
	for id := range delivered() {
		if !before[id] {
			after[id] = true
		}
	}
	shownAfter := amtoolCheck(t, amtool, am.addr, after)
	ids := delivered()

	mu.Lock()
	dups := 0
	for _, n := range routed {
		dups += n - 1
	}
	mu.Unlock()
	t.Logf("%d findings: %d before the outage, %d after; all routed on (%d repeats by Alertmanager); amtool showed %d before and %d after the restart",
		len(ids), first, len(ids)-first, dups, shownBefore, shownAfter)
}

// amtoolCheck has amtool list Alertmanager's alerts and checks that each
// of ids is shown exactly once, with its labels and annotations.
func amtoolCheck(t *testing.T, amtool, addr string, ids map[string]bool) int {
	t.Helper()
	out, err := exec.Command(amtool, "--alertmanager.url=http://"+addr, "alert", "query", "-o", "json").Output()
	if err != nil {
		t.Fatalf("amtool: %v", err)
	}
	var shown []struct {
		Labels       map[string]string
		Annotations  map[string]string
		GeneratorURL string
		EndsAt       time.Time
		StartsAt     time.Time
	}
	if err := json.Unmarshal(out, &shown); err != nil {
		t.Fatalf("amtool output: %v\n%s", err, out)
	}
	count := map[string]int{}
	for _, a := range shown {
		count[a.Labels["alert_id"]]++
		if a.Labels["alertname"] == "" || a.Annotations["summary"] == "" || !strings.HasPrefix(a.GeneratorURL, "https://encwatch.example.com/?bucket=") ||
			a.EndsAt.Sub(a.StartsAt) != 2*time.Hour {
			t.Errorf("alert %+v", a)
		}
	}
	for id := range ids {
		if count[id] != 1 {
			t.Errorf("amtool shows alert %s %d times", id, count[id])
		}
	}
	return len(shown)
}
