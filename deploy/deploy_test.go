// Package deploy_test checks the files in deploy/: the Grafana dashboard and
// Prometheus rules against a real Prometheus scraping a real daemon, and the
// ECS and IAM documents for what deploy/README.md promises.
package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/cmd/daemon"
	"github.com/encwatch/encwatch/fixtures/awsemu"
)

// need returns the path of a Debian binary, skipping the test when it is
// missing outside CI and failing under CI=true.
func need(t *testing.T, bin, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(bin)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (Debian package %s; scripts/test.sh installs it)", bin, pkg)
		}
		t.Skipf("%s not installed (apt-get install %s); skipping", bin, pkg)
	}
	return p
}

func TestPromtool(t *testing.T) {
	promtool := need(t, "promtool", "prometheus")
	for _, args := range [][]string{{"check", "rules", "prometheus/alerts.yaml"}, {"test", "rules", "prometheus/alerts_test.yaml"}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "SUCCESS") {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

type dashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct{ Name, Type string } `json:"list"`
	} `json:"templating"`
	Panels []struct {
		Type       string               `json:"type"`
		Title      string               `json:"title"`
		Datasource struct{ UID string } `json:"datasource"`
		Targets    []struct {
			Expr       string               `json:"expr"`
			Datasource struct{ UID string } `json:"datasource"`
		} `json:"targets"`
	} `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	b, err := os.ReadFile("grafana/encwatch.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q schemaVersion %d", d.UID, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["region"] != "query" || vars["source"] != "query" {
		t.Errorf("variables %v", vars)
	}
	rows := map[string]bool{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			rows[p.Title] = true
			continue
		}
		if p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q, %d targets", p.Title, p.Datasource.UID, len(p.Targets))
		}
	}
	for _, r := range []string{"Ingestion", "Detection", "Delivery", "AWS API"} {
		if !rows[r] {
			t.Errorf("no %s row", r)
		}
	}
}

// grafanaVars replaces Grafana's variables with what Prometheus accepts.
func grafanaVars(expr string) string {
	return strings.NewReplacer("$__rate_interval", "1m", "$__range", "1h", "$source", ".*", "$region", ".*").Replace(expr)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestPrometheusScrapesDaemon runs the daemon on recorded events, has a real
// Prometheus scrape it, and evaluates every dashboard query and every alert
// expression through Prometheus' HTTP API: each must parse, and every panel
// query must return data. Every metric a panel names must be one the daemon
// exports.
func TestPrometheusScrapesDaemon(t *testing.T) {
	prom := need(t, "prometheus", "prometheus")
	// The daemon: LookupEvents from the emulator, the fixtures as files,
	// stdout and a webhook, and a custom rule.
	emu := awsemu.NewCloudTrail()
	esrv := httptest.NewServer(emu)
	defer esrv.Close()
	for k, v := range map[string]string{"AWS_ENDPOINT_URL_CLOUDTRAIL": esrv.URL, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
		"AWS_CA_BUNDLE": "", "AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull, "AWS_EC2_METADATA_DISABLED": "true", "HOOK_SECRET": "k"} {
		t.Setenv(k, v)
	}
	b, _ := os.ReadFile("../fixtures/records/gp-delete.json")
	rec, _ := awsemu.Retime(b, time.Now().Add(-time.Minute))
	emu.AddRecord("111122223333", "us-east-1", rec, time.Time{})
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer hook.Close()
	records, _ := filepath.Abs("../fixtures/records")
	cfg, err := config.Parse("test", []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources:
  lookup: {regions: [us-east-1], interval: 1s}
  files: {paths: [%q], watch: true, interval: 1s}
sinks:
  stdout: {}
  webhooks: [{name: hook, url: %q, secretEnv: HOOK_SECRET}]
customRules: [{id: any-delete, severity: info, summary: delete, when: 'event.name == "DeleteBucketEncryption"'}]
`, t.TempDir(), records, hook.URL)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, Stdout: io.Discard, Stderr: io.Discard, Version: "test", OnReady: func(a string) { addrc <- a }})
	}()
	addr := <-addrc
	defer func() { cancel(); <-done }()

	// Prometheus scraping it every second.
	dir := t.TempDir()
	promCfg := filepath.Join(dir, "prometheus.yml")
	abs, _ := filepath.Abs("prometheus/alerts.yaml")
	os.WriteFile(promCfg, []byte(fmt.Sprintf("global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [%q]\nscrape_configs:\n  - job_name: encwatch\n    static_configs: [{targets: [%q]}]\n", abs, addr)), 0o644)
	promAddr := freePort(t)
	cmd := exec.Command(prom, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr, "--log.level=warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	query := func(expr string) (string, int, error) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(expr))
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		var r struct {
			Status, Error string
			Data          struct{ Result []json.RawMessage }
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return "", 0, err
		}
		if r.Status != "success" {
			return r.Status, 0, fmt.Errorf("%s", r.Error)
		}
		return r.Status, len(r.Data.Result), nil
	}
	// Wait for enough scrapes for rates over a minute window.
	deadline := time.Now().Add(45 * time.Second)
	for time.Now().Before(deadline) {
		if _, n, err := query(`count_over_time(up{job="encwatch"}[1m])`); err == nil && n > 0 {
			if _, m, _ := query(`count_over_time(up{job="encwatch"}[1m]) >= 6`); m > 0 {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	exported := map[string]bool{}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range regexp.MustCompile(`(?m)^(encwatch_[a-z_]+)`).FindAllStringSubmatch(string(body), -1) {
		exported[m[1]] = true
	}
	metricName := regexp.MustCompile(`encwatch_[a-z_]+`)
	d := loadDashboard(t)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			n++
			for _, m := range metricName.FindAllString(tg.Expr, -1) {
				if !exported[m] {
					t.Errorf("panel %q uses %s, which the daemon does not export", p.Title, m)
				}
			}
			_, count, err := query(grafanaVars(tg.Expr))
			if err != nil {
				t.Errorf("panel %q: %v\n  %s", p.Title, err, tg.Expr)
			} else if count == 0 {
				t.Errorf("panel %q returns no data:\n  %s", p.Title, tg.Expr)
			}
		}
	}
	var rulesFile struct {
		Groups []struct {
			Rules []struct{ Alert, Expr string } `yaml:"rules"`
		} `yaml:"groups"`
	}
	raw, _ := os.ReadFile("prometheus/alerts.yaml")
	if err := yaml.Unmarshal(raw, &rulesFile); err != nil {
		t.Fatal(err)
	}
	for _, g := range rulesFile.Groups {
		for _, r := range g.Rules {
			if _, _, err := query(r.Expr); err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
			}
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				if !exported[m] {
					t.Errorf("alert %s uses %s, which the daemon does not export", r.Alert, m)
				}
			}
		}
	}
	t.Logf("%d panel queries and the alert expressions evaluated by Prometheus", n)
}
