// Package config reads encwatch's YAML configuration: every key has a
// default, ENCWATCH_* environment variables override keys, and every error
// names the file, line and key it is about.
package config

import (
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/rules"
)

// Config is the whole configuration file (DESIGN.md section 3).
type Config struct {
	State       State              `yaml:"state"`
	HTTP        HTTP               `yaml:"http"`
	Log         Log                `yaml:"log"`
	Sources     Sources            `yaml:"sources"`
	Sinks       Sinks              `yaml:"sinks"`
	Policy      rules.Policy       `yaml:"policy"`
	CustomRules []rules.CustomRule `yaml:"customRules"`
	Limits      Limits             `yaml:"limits"`
	Reload      Reload             `yaml:"reload"`
	Pipeline    Pipeline           `yaml:"pipeline"`

	// Compiled holds the custom rules compiled by Parse.
	Compiled []*rules.Compiled `yaml:"-"`
}

// Reload configures live reloading of the policy and custom rules (SIGHUP
// always reloads).
type Reload struct {
	// Watch reloads when the configuration file changes.
	Watch    bool           `yaml:"watch"`
	Interval rules.Duration `yaml:"interval"`
}

// Pipeline configures how events reach the rules.
type Pipeline struct {
	// Repartition, when set, has the tasks that read the sources publish
	// the events they decoded to a Kafka topic keyed by the bucket's
	// account, and judges what the consumer group assigns this task: for
	// several tasks on one SQS queue, so that each account's events reach
	// one task (stateful rules).
	Repartition *Repartition `yaml:"repartition"`
}

// Repartition names the topic and consumer group of the repartition.
type Repartition struct {
	Kafka *KafkaSource `yaml:"kafka"`
}

// State is where durable state lives.
type State struct {
	Dir string `yaml:"dir"`
}

// HTTP is the daemon's HTTP server (/metrics, /healthz, /readyz).
type HTTP struct {
	Listen string `yaml:"listen"`
	// TLS serves HTTPS with this certificate and key.
	TLS struct {
		CertFile string `yaml:"certFile"`
		KeyFile  string `yaml:"keyFile"`
	} `yaml:"tls"`
	// TokenFile holds a bearer token required on every path but /healthz.
	TokenFile string `yaml:"tokenFile"`
	// Pprof serves /debug/pprof/ (behind the token when one is set).
	Pprof bool `yaml:"pprof"`
	// ExternalURL is how people reach the daemon's web page (behind a load
	// balancer, say); alerts link to it (Alertmanager's generatorURL).
	ExternalURL string `yaml:"externalURL"`
}

// Log configures logging (JSON lines on stderr).
type Log struct {
	Level string `yaml:"level"`
}

// Limits bounds input.
type Limits struct {
	MaxRecordBytes int `yaml:"maxRecordBytes"`
	// MaxDecompressedBytes bounds one file, S3 object or message once
	// decompressed (gzip bombs).
	MaxDecompressedBytes int64 `yaml:"maxDecompressedBytes"`
	// MaxNesting bounds how deep a record nests.
	MaxNesting int `yaml:"maxNesting"`
	// MaxRulesPerRequest bounds the encryption rules judged in one request.
	MaxRulesPerRequest int `yaml:"maxRulesPerRequest"`
	// CustomRuleCost bounds one custom rule on one event, in CEL cost units.
	CustomRuleCost uint64 `yaml:"customRuleCost"`
}

// Sources are the inputs; a nil source is off.
type Sources struct {
	Lookup *Lookup      `yaml:"lookup"`
	SQS    *SQS         `yaml:"sqs"`
	Kafka  *KafkaSource `yaml:"kafka"`
	Files  *Files       `yaml:"files"`
	// Inventory reads every bucket's configuration (DESIGN 5a).
	Inventory *Inventory `yaml:"inventory"`
}

// Inventory scans the configuration of every bucket: at start, then every
// interval.
type Inventory struct {
	Interval rules.Duration `yaml:"interval"`
	// Regions and Accounts default to sources.lookup's.
	Regions  []string  `yaml:"regions"`
	Accounts []Account `yaml:"accounts"`
	// Rate is the S3 and KMS calls per second per account, at most.
	Rate float64 `yaml:"rate"`
}

// Lookup tails CloudTrail LookupEvents.
type Lookup struct {
	Regions   []string       `yaml:"regions"`
	Interval  rules.Duration `yaml:"interval"`
	Overlap   rules.Duration `yaml:"overlap"`
	StartFrom rules.Duration `yaml:"startFrom"`
	Accounts  []Account      `yaml:"accounts"`
}

// Account is a member account read through an assumed role.
type Account struct {
	RoleARN    string `yaml:"roleArn"`
	ExternalID string `yaml:"externalId"`
}

// SQS reads trail log files announced through SQS.
type SQS struct {
	QueueURL    string `yaml:"queueURL"`
	Workers     int    `yaml:"workers"`
	MaxReceives int    `yaml:"maxReceives"`
	// Visibility is the visibility timeout asked for, extended while a
	// message's files are still being read (default 60s).
	Visibility rules.Duration `yaml:"visibility"`
	// WaitTime is the long-polling wait (default 20s).
	WaitTime rules.Duration `yaml:"waitTime"`
}

// KafkaSource reads CloudTrail records from a Kafka topic.
type KafkaSource struct {
	Brokers []string `yaml:"brokers"`
	Topic   string   `yaml:"topic"`
	Group   string   `yaml:"group"`
	TLS     TLS      `yaml:"tls"`
	SASL    SASL     `yaml:"sasl"`
	// SessionTimeout is how long the group waits for a silent member
	// before giving its partitions to the others (default 30s; the
	// brokers' group.min.session.timeout.ms bounds it, 6s by default).
	SessionTimeout rules.Duration `yaml:"sessionTimeout"`
}

// Files replays files and folders, and optionally watches for new ones.
type Files struct {
	Paths []string `yaml:"paths"`
	Watch bool     `yaml:"watch"`
	// Interval is how often a watched tree is listed for new files.
	Interval rules.Duration `yaml:"interval"`
}

// Sinks are the outputs; a nil sink is off.
type Sinks struct {
	Stdout   *Stdout    `yaml:"stdout"`
	Kafka    *KafkaSink `yaml:"kafka"`
	Webhooks []Webhook  `yaml:"webhooks"`
	// Alertmanager posts to Prometheus Alertmanagers (API v2).
	Alertmanager []Alertmanager `yaml:"alertmanager"`
	// Remediate puts buckets back on their last compliant configuration
	// (opt-in; DESIGN 5b).
	Remediate *Remediate `yaml:"remediate"`
}

// Alertmanager is one Alertmanager the findings are posted to.
type Alertmanager struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// ResolveAfter sets each alert's endsAt after its detection (default 1h).
	ResolveAfter rules.Duration `yaml:"resolveAfter"`
	MinSeverity  string         `yaml:"minSeverity"`
	Rules        []string       `yaml:"rules"`
	TLS          TLS            `yaml:"tls"`
	BasicAuth    struct {
		Username     string `yaml:"username"`
		PasswordFile string `yaml:"passwordFile"`
		PasswordEnv  string `yaml:"passwordEnv"`
	} `yaml:"basicAuth"`
	BearerTokenFile string         `yaml:"bearerTokenFile"`
	BearerTokenEnv  string         `yaml:"bearerTokenEnv"`
	Timeout         rules.Duration `yaml:"timeout"`
}

// Remediate is the opt-in remediation sink.
type Remediate struct {
	// DryRun (default true) reads and says what it would write, and
	// writes nothing.
	DryRun  *bool    `yaml:"dryRun"`
	Rules   []string `yaml:"rules"`
	Buckets []string `yaml:"buckets"`
	// Rate is the S3 calls per second per account, at most (default 1).
	Rate float64 `yaml:"rate"`
	// RoleName is the role the sink assumes in the bucket's account
	// (arn:aws:iam::ACCOUNT:role/NAME); a role only it uses, so that its
	// own changes are recognised in the trail and never answered.
	RoleName string `yaml:"roleName"`
	// OwnRoleARNs are more ARN globs whose changes are the sink's own (the
	// task role, when it acts without roleName).
	OwnRoleARNs []string `yaml:"ownRoleArns"`
}

// IsDryRun reports whether the sink only says what it would do.
func (r *Remediate) IsDryRun() bool { return r.DryRun == nil || *r.DryRun }

// Stdout writes alert v1 JSON lines (or OCSF Detection Findings) on
// standard output.
type Stdout struct {
	Format string `yaml:"format"` // v1 (default) or ocsf
}

// KafkaSink writes alerts to a Kafka topic.
type KafkaSink struct {
	Brokers []string `yaml:"brokers"`
	Topic   string   `yaml:"topic"`
	Format  string   `yaml:"format"` // v1 (default) or ocsf
	TLS     TLS      `yaml:"tls"`
	SASL    SASL     `yaml:"sasl"`
}

// TLS configures a TLS client.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"caFile"`
	CertFile           string `yaml:"certFile"`
	KeyFile            string `yaml:"keyFile"`
	InsecureSkipVerify bool   `yaml:"insecureSkipVerify"`
}

// SASL configures Kafka authentication. The password comes from a file or
// an environment variable, never from the YAML.
type SASL struct {
	Mechanism    string `yaml:"mechanism"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"passwordFile"`
	PasswordEnv  string `yaml:"passwordEnv"`
}

// Webhook posts signed alerts to a URL.
type Webhook struct {
	Name        string         `yaml:"name"`
	URL         string         `yaml:"url"`
	URLFile     string         `yaml:"urlFile"`
	SecretFile  string         `yaml:"secretFile"`
	SecretEnv   string         `yaml:"secretEnv"`
	MinSeverity string         `yaml:"minSeverity"`
	Rules       []string       `yaml:"rules"`
	Format      string         `yaml:"format"`
	Timeout     rules.Duration `yaml:"timeout"`
	// Concurrency is how many alerts are posted at once (default 4).
	Concurrency int `yaml:"concurrency"`
}

// Default returns the configuration with every default set and every
// optional section off.
func Default() Config {
	return Config{
		State:  State{Dir: "./encwatch-state"},
		HTTP:   HTTP{Listen: "127.0.0.1:9108"},
		Log:    Log{Level: "info"},
		Policy: rules.DefaultPolicy(),
	}
}

// IngestLimits returns the input bounds for the decoders.
func (c Config) IngestLimits() ingest.Limits {
	return ingest.Limits{MaxRecordBytes: c.Limits.MaxRecordBytes, MaxInputBytes: c.Limits.MaxDecompressedBytes,
		MaxNesting: c.Limits.MaxNesting, MaxRules: c.Limits.MaxRulesPerRequest}
}
