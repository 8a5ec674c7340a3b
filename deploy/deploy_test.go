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
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"go.yaml.in/yaml/v3"

	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/cmd/daemon"
	"github.com/encwatch/encwatch/fixtures/awsemu"
)

// need returns the path of a Debian binary, skipping the test when it is
// missing outside CI and failing under CI=true.
func need(t *testing.T, bin, pkg string) string {
	t.Helper()
	return testkit.Need(t, bin, pkg)
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
	testkit.AWSEnv(t, esrv.URL)
	t.Setenv("HOOK_SECRET", "k")
	b, _ := os.ReadFile("../fixtures/records/gp-delete.json")
	rec, _ := awsemu.Retime(b, time.Now().Add(-time.Minute))
	emu.AddRecord("111122223333", "us-east-1", rec, time.Time{})
	hook := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer hook.Close()
	q, store := awsemu.NewSQS(), awsemu.NewS3()
	qs, ss := httptest.NewServer(q), httptest.NewServer(store)
	defer qs.Close()
	defer ss.Close()
	t.Setenv("AWS_ENDPOINT_URL_SQS", qs.URL)
	t.Setenv("AWS_ENDPOINT_URL_S3", ss.URL)
	store.Put("trail", "AWSLogs/1/CloudTrail/us-east-1/a.json", b)
	// A small estate for the inventory: one bucket it reads, one it may not.
	keys := awsemu.NewKMS()
	ks := httptest.NewServer(keys)
	defer ks.Close()
	t.Setenv("AWS_ENDPOINT_URL_KMS", ks.URL)
	keys.AddKey(awsemu.Key{ID: "k1", Account: "111122223333", Region: "us-east-1", State: "Disabled"})
	store.AddBucket(awsemu.Bucket{Name: "estate-1", Account: "111122223333", Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "k1"}}})
	store.AddBucket(awsemu.Bucket{Name: "estate-2", Account: "111122223333", Region: "us-east-1", Deny: true})
	q.Send(`{"s3Bucket":"trail","s3ObjectKey":["AWSLogs/1/CloudTrail/us-east-1/a.json"]}`)
	records, _ := filepath.Abs("../fixtures/records")
	cfg, err := config.Parse("test", []byte(fmt.Sprintf(`state: {dir: %q}
http: {listen: "127.0.0.1:0"}
sources:
  lookup: {regions: [us-east-1], interval: 1s}
  files: {paths: [%q], watch: true, interval: 1s}
  sqs: {queueURL: %q, workers: 1, waitTime: 1s}
  inventory: {regions: [us-east-1], interval: 10s, rate: 50}
sinks:
  stdout: {}
  webhooks: [{name: hook, url: %q, secretEnv: HOOK_SECRET}]
  remediate: {dryRun: true, buckets: ["estate-*"]}
customRules: [{id: any-delete, severity: info, summary: delete, when: 'event.name == "DeleteBucketEncryption"'}]
`, t.TempDir(), records, qs.URL+"/1/trail-logs", hook.URL)), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var daemonLog testkit.Buffer
	defer func() {
		if t.Failed() {
			t.Logf("daemon log:\n%s", daemonLog.String())
		}
	}()
	addrc := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{Config: cfg, Stdout: io.Discard, Stderr: &daemonLog, Version: "test", OnReady: func(a string) { addrc <- a }})
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

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// TestTaskDefinition checks what deploy/README.md promises of the task.
func TestTaskDefinition(t *testing.T) {
	var td struct {
		TaskRoleArn          string `json:"taskRoleArn"`
		Volumes              []struct{ Name string }
		ContainerDefinitions []struct {
			User                   string `json:"user"`
			ReadonlyRootFilesystem bool   `json:"readonlyRootFilesystem"`
			StopTimeout            int    `json:"stopTimeout"`
			Environment            []struct{ Name, Value string }
			Secrets                []struct{ Name, ValueFrom string }
			MountPoints            []struct{ SourceVolume, ContainerPath string }
			LogConfiguration       struct{ LogDriver string }
			HealthCheck            struct{ Command []string }
			PortMappings           []struct{ ContainerPort int }
		} `json:"containerDefinitions"`
	}
	readJSON(t, "ecs/task-definition.json", &td)
	if !strings.Contains(td.TaskRoleArn, ":role/") || len(td.ContainerDefinitions) != 1 {
		t.Fatalf("task role %q, %d containers", td.TaskRoleArn, len(td.ContainerDefinitions))
	}
	c := td.ContainerDefinitions[0]
	if c.User == "" || c.User == "root" || strings.HasPrefix(c.User, "0") {
		t.Errorf("user %q is not a non-root user", c.User)
	}
	if !c.ReadonlyRootFilesystem {
		t.Error("root file system is writable")
	}
	if c.StopTimeout < 20 || c.StopTimeout > 120 {
		t.Errorf("stopTimeout %d: encwatch needs 20 s to drain", c.StopTimeout)
	}
	if c.LogConfiguration.LogDriver != "awslogs" {
		t.Errorf("log driver %q", c.LogConfiguration.LogDriver)
	}
	if strings.Join(c.HealthCheck.Command, " ") != "CMD /encwatch healthcheck" {
		t.Errorf("health check %v", c.HealthCheck.Command)
	}
	env := map[string]string{}
	for _, e := range c.Environment {
		env[e.Name] = e.Value
	}
	for _, s := range c.Secrets {
		if !strings.HasPrefix(s.ValueFrom, "arn:aws:secretsmanager:") {
			t.Errorf("secret %s is not from Secrets Manager: %s", s.Name, s.ValueFrom)
		}
		if strings.HasPrefix(s.Name, "ENCWATCH_") {
			t.Errorf("secret %s would be read as a configuration key", s.Name)
		}
		env[s.Name] = "secret-value"
	}
	// The example configuration is valid with these variables, and the
	// task mounts a volume at its state dir and exposes its port.
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	for _, k := range []string{"KAFKA_PASSWORD", "WEBHOOK_HMAC"} {
		t.Setenv(k, env[k])
	}
	cfg, err := config.Load("examples/encwatch-ecs.yaml", envList)
	if err != nil {
		t.Fatal(err)
	}
	mounted := false
	for _, m := range c.MountPoints {
		if m.ContainerPath == cfg.State.Dir && len(td.Volumes) > 0 && m.SourceVolume == td.Volumes[0].Name {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("no volume mounted at the state dir %s", cfg.State.Dir)
	}
	if len(c.PortMappings) == 0 || !strings.HasSuffix(cfg.HTTP.Listen, fmt.Sprintf(":%d", c.PortMappings[0].ContainerPort)) {
		t.Errorf("port %v does not match http.listen %s", c.PortMappings, cfg.HTTP.Listen)
	}
	if cfg.Sinks.Kafka.SASL.PasswordEnv != "KAFKA_PASSWORD" || cfg.Sinks.Webhooks[0].SecretEnv != "WEBHOOK_HMAC" {
		t.Error("the example configuration does not read the task's secrets")
	}
}

type policyDoc struct {
	Statement []struct {
		Sid, Effect string
		Action      any
		Resource    any
		Principal   map[string]any
		Condition   map[string]any
	}
}

func strs(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

// inventoryActions are the permissions DESIGN section 1 lists for the
// inventory.
var inventoryActions = []string{"s3:ListAllMyBuckets", "s3:GetEncryptionConfiguration", "s3express:ListAllMyDirectoryBuckets",
	"s3express:GetEncryptionConfiguration", "kms:DescribeKey"}

// unscoped are the actions AWS grants on "*" only.
var unscoped = []string{"cloudtrail:LookupEvents", "s3:ListAllMyBuckets", "s3express:ListAllMyDirectoryBuckets"}

func TestIAMPolicies(t *testing.T) {
	var task policyDoc
	readJSON(t, "iam/task-role-policy.json", &task)
	actions := map[string][]string{}
	for _, s := range task.Statement {
		for _, a := range strs(s.Action) {
			if strings.Contains(a, "*") {
				t.Errorf("wildcard action %s", a)
			}
			actions[a] = strs(s.Resource)
		}
	}
	for _, a := range append([]string{"cloudtrail:LookupEvents", "sts:AssumeRole", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "s3:GetObject", "kms:Decrypt"}, inventoryActions...) {
		res, ok := actions[a]
		if !ok {
			t.Errorf("the task role lacks %s", a)
			continue
		}
		// LookupEvents and the two List calls have no resource-level
		// permissions; the rest must be scoped.
		if !slices.Contains(unscoped, a) && (len(res) == 0 || res[0] == "*") {
			t.Errorf("%s is not scoped to resources: %v", a, res)
		}
	}
	var reader struct {
		AssumeRolePolicyDocument policyDoc
		Policies                 []struct{ PolicyDocument policyDoc }
	}
	readJSON(t, "iam/reader-role.json", &reader)
	trust := reader.AssumeRolePolicyDocument.Statement
	if len(trust) != 1 || strs(trust[0].Action)[0] != "sts:AssumeRole" || trust[0].Condition["StringEquals"] == nil {
		t.Errorf("reader trust policy %+v: want sts:AssumeRole with an external ID", trust)
	}
	var granted []string
	for _, p := range reader.Policies {
		for _, s := range p.PolicyDocument.Statement {
			granted = append(granted, strs(s.Action)...)
		}
	}
	slices.Sort(granted)
	want := append([]string{"cloudtrail:LookupEvents"}, inventoryActions...)
	slices.Sort(want)
	if !slices.Equal(granted, want) {
		t.Errorf("the reader role grants %v; it needs exactly %v", granted, want)
	}
}

func TestDockerfile(t *testing.T) {
	b, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(b)
	for _, want := range []string{"AS build", "CGO_ENABLED=0", "-trimpath", "distroless/static", "USER 65532:65532", `HEALTHCHECK`, `"/encwatch", "healthcheck"`} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if strings.Count(d, "FROM ") < 2 {
		t.Error("the Dockerfile is not multi-stage")
	}
}

// TestRemediateRole: the remediation role may read and write default
// encryption on bucket ARNs, nothing else, and only the task role may
// assume it, under the session name the sink uses.
func TestRemediateRole(t *testing.T) {
	var role struct {
		AssumeRolePolicyDocument policyDoc
		Policies                 []struct{ PolicyDocument policyDoc }
	}
	readJSON(t, "iam/remediate-role.json", &role)
	trust := role.AssumeRolePolicyDocument.Statement
	if len(trust) != 1 || strs(trust[0].Action)[0] != "sts:AssumeRole" || trust[0].Condition["StringEquals"] == nil {
		t.Errorf("trust policy %+v: want sts:AssumeRole by the task role, with the session name", trust)
	}
	var granted []string
	for _, p := range role.Policies {
		for _, s := range p.PolicyDocument.Statement {
			granted = append(granted, strs(s.Action)...)
			for _, r := range strs(s.Resource) {
				if !strings.HasPrefix(r, "arn:aws:s3:::") {
					t.Errorf("resource %q is not a bucket ARN (glob)", r)
				}
			}
		}
	}
	slices.Sort(granted)
	if !slices.Equal(granted, []string{"s3:GetEncryptionConfiguration", "s3:PutEncryptionConfiguration"}) {
		t.Errorf("the remediation role grants %v", granted)
	}
}
