package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const full = `state: {dir: /var/lib/encwatch}
http:  {listen: "0.0.0.0:9108"}
log:   {level: debug}
sources:
  lookup:
    regions: [us-east-1, us-west-2]
    interval: 45s
    accounts: [{roleArn: "arn:aws:iam::111122223333:role/encwatch-reader"}]
  sqs:   {queueURL: "https://sqs.us-east-1.amazonaws.com/111122223333/trail-logs", workers: 4}
  kafka: {brokers: ["b1:9092"], topic: cloudtrail, group: encwatch}
  files: {paths: ["/data/cloudtrail"], watch: true}
  inventory:
    interval: 6h
    regions: [us-east-1, us-west-2]
    accounts: []
    rate: 20
sinks:
  stdout: {}
  kafka:
    brokers: ["b1:9092"]
    topic: encwatch-alerts
    tls:  {enabled: true, caFile: /etc/ssl/msk-ca.pem}
    sasl: {mechanism: SCRAM-SHA-512, username: encwatch, passwordFile: /run/secrets/kafka}
  webhooks:
    - {name: secops, url: "https://hooks.example.com/encwatch", secretFile: /run/secrets/hmac, minSeverity: medium}
  remediate:
    dryRun: true
    rules: [encryption-deleted, algorithm-not-allowed, kms-aws-managed-key, sse-c-unblocked, bucket-key-disabled]
    buckets: ["*"]
    rate: 1
policy:
  directoryBuckets:      {allowedAlgorithms: [aws:kms]}
  generalPurposeBuckets: {allowedAlgorithms: [aws:kms, aws:kms:dsse]}
  allowedKMSKeys: []
  allowedPrincipals: []
  readBurst: {buckets: 20, window: 10m}
  buckets:
    - {match: "logs-*", allowedAlgorithms: [AES256, aws:kms]}
  severity: {bucket-key-disabled: info}
  disabled: []
customRules:
  - {id: my-rule, severity: medium, summary: "root on directory", when: 'bucket.type == "directory" && event.actor.type == "Root"'}
`

func TestDesignExampleLoads(t *testing.T) {
	c, err := Parse("encwatch.yaml", []byte(full), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sources.Lookup.Interval.D() != 45*time.Second || c.Sources.Lookup.Overlap.D() != 20*time.Minute || c.Sources.Lookup.StartFrom.D() != 24*time.Hour {
		t.Errorf("lookup durations: %+v", c.Sources.Lookup)
	}
	if c.Sinks.Stdout == nil || c.Sinks.Webhooks[0].MinSeverity != "medium" || c.Policy.ReadBurst.Window.D() != 10*time.Minute {
		t.Errorf("config: %+v", c)
	}
	if inv := c.Sources.Inventory; inv.Interval.D() != 6*time.Hour || inv.Rate != 20 || len(inv.Accounts) != 1 {
		t.Errorf("inventory %+v: want its accounts from sources.lookup", inv)
	}
	if r := c.Sinks.Remediate; !r.IsDryRun() || len(r.Rules) != 5 || r.Rate != 1 {
		t.Errorf("remediate %+v", r)
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.State.Dir != "./encwatch-state" || c.HTTP.Listen != "127.0.0.1:9108" || c.Log.Level != "info" ||
		c.Sources.Lookup != nil || c.Sinks.Kafka != nil || c.Policy.ReadBurst.Buckets != 20 {
		t.Errorf("defaults: %+v", c)
	}
}

func TestStdoutWithoutBraces(t *testing.T) {
	c, err := Parse("f", []byte("sinks:\n  stdout:\n"), nil)
	if err != nil || c.Sinks.Stdout == nil {
		t.Errorf("stdout: %v %v", c.Sinks.Stdout, err)
	}
}

func TestErrorsNameFileLineKey(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of one problem each
	}{
		{"repartition without kafka", "pipeline:\n  repartition: {}\n",
			[]string{"f.yaml:2: pipeline.repartition.kafka: missing"}},
		{"repartition on the source's topic", "sources:\n  kafka: {brokers: [\"b:9092\"], topic: ct}\npipeline:\n  repartition:\n    kafka: {brokers: [\"b:9092\"], topic: ct, sessionTimeout: 10ms}\n",
			[]string{"pipeline.repartition.kafka.topic: must not be sources.kafka's topic", "pipeline.repartition.kafka.sessionTimeout: must be between 1s and 30m"}},
		{"unknown key", "log: {level: info}\nsources:\n  lookup:\n    regions: [us-east-1]\n    intervall: 30s\n",
			[]string{"f.yaml:5: sources.lookup.intervall: unknown key"}},
		{"wrong type", "sources:\n  sqs:\n    queueURL: https://sqs.us-east-1.amazonaws.com/1/q\n    workers: many\n",
			[]string{"f.yaml:4: sources.sqs.workers: wrong type"}},
		{"missing region", "sources:\n  lookup:\n    interval: 30s\n",
			[]string{"f.yaml:2: sources.lookup.regions: missing"}},
		{"bad region", "sources:\n  lookup:\n    regions:\n      - us-east-1\n      - Mars\n",
			[]string{"f.yaml:5: sources.lookup.regions[1]: \"Mars\" is not a Region name"}},
		{"bad duration", "policy:\n  readBurst: {buckets: 5, window: soon}\n",
			[]string{"f.yaml:2: policy.readBurst.window: invalid duration"}},
		{"bad severity and algorithm", "policy:\n  severity:\n    root-principal: urgent\n  generalPurposeBuckets:\n    allowedAlgorithms: [AES-256]\n",
			[]string{"f.yaml:3: policy.severity.root-principal: unknown severity"}},
		{"bad algorithm", "policy:\n  generalPurposeBuckets:\n    allowedAlgorithms: [AES-256]\n",
			[]string{"f.yaml:3: policy.generalPurposeBuckets.allowedAlgorithms[0]: unknown algorithm"}},
		{"secret in yaml", "sinks:\n  kafka:\n    brokers: [\"b:9092\"]\n    topic: t\n    sasl: {mechanism: PLAIN, username: u, password: hunter2}\n",
			[]string{"f.yaml:5: sinks.kafka.sasl.password: unknown key \"password\": secrets are not allowed"}},
		{"two problems", "log: {level: loud}\nhttp: {listen: nowhere}\n",
			[]string{"f.yaml:1: log.level: unknown level", "f.yaml:2: http.listen: want host:port"}},
		{"yaml syntax", "sources:\n  lookup: [\n", []string{"f.yaml:"}},
		{"custom rule does not compile", "customRules:\n  - id: r1\n    severity: high\n    when: 'evnt.name == \"x\"'\n",
			[]string{"f.yaml:4: customRules[0].when: rule r1: ERROR: expression 1:1: undeclared reference to 'evnt'"}},
		{"custom rule id clashes", "customRules:\n  - {id: root-principal, severity: high, when: 'true'}\n",
			[]string{"f.yaml:2: customRules[0].id: duplicate rule id"}},
		{"inventory without regions", "sources:\n  inventory: {interval: 6h}\n",
			[]string{"sources.inventory.regions: missing"}},
		{"inventory too eager", "sources:\n  inventory: {regions: [us-east-1], interval: 1s, rate: 5000}\n",
			[]string{"sources.inventory.interval: must be at least 10s", "sources.inventory.rate: must be between"}},
		{"remediation that could loop", "sinks:\n  remediate: {dryRun: false}\n",
			[]string{"sinks.remediate.roleName: set it"}},
		{"remediation of a rule it cannot answer", "sinks:\n  remediate: {rules: [root-principal]}\n",
			[]string{"sinks.remediate.rules[0]: \"root-principal\" is not a finding remediation answers"}},
		{"unknown rule disabled", "policy:\n  disabled: [root-principal, no-such]\n", []string{"f.yaml:2: policy.disabled[1]: unknown rule id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tt.yaml), nil)
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("want *Error, got %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestEnvOverrides(t *testing.T) {
	env := []string{
		"ENCWATCH_LOG_LEVEL=debug",
		"ENCWATCH_SOURCES_LOOKUP_REGIONS=eu-west-1, eu-central-1",
		"ENCWATCH_POLICY_READBURST_BUCKETS=5",
		"PATH=/usr/bin",
	}
	c, err := Parse("f.yaml", []byte("log: {level: info}\n"), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Log.Level != "debug" || len(c.Sources.Lookup.Regions) != 2 || c.Sources.Lookup.Regions[1] != "eu-central-1" || c.Policy.ReadBurst.Buckets != 5 {
		t.Errorf("overrides not applied: %+v %+v", c.Log, c.Sources.Lookup)
	}
	_, err = Parse("f.yaml", nil, []string{"ENCWATCH_POLICY_READBURST_BUCKETS=lots"})
	if err == nil || !strings.Contains(err.Error(), "environment variable ENCWATCH_POLICY_READBURST_BUCKETS: policy.readBurst.buckets: wrong type") {
		t.Errorf("bad env value: %v", err)
	}
	_, err = Parse("f.yaml", nil, []string{"ENCWATCH_NO_SUCH_KEY=1"})
	if err == nil || !strings.Contains(err.Error(), "ENCWATCH_NO_SUCH_KEY names no configuration key") {
		t.Errorf("unknown env: %v", err)
	}
}

func TestConfigFromEnvironment(t *testing.T) {
	env := []string{YAMLEnv + "=sources:\n  lookup: {regions: [eu-west-1]}\n", "ENCWATCH_LOG_LEVEL=debug"}
	c, err := Load("", env)
	if err != nil {
		t.Fatal(err)
	}
	if c.Sources.Lookup == nil || c.Sources.Lookup.Regions[0] != "eu-west-1" || c.Log.Level != "debug" {
		t.Errorf("config from %s: %+v", YAMLEnv, c)
	}
	_, err = Load("", []string{YAMLEnv + "=log: {level: loud}\n"})
	if err == nil || !strings.Contains(err.Error(), YAMLEnv+":1: log.level") {
		t.Errorf("a bad value names the variable and line: %v", err)
	}
}
