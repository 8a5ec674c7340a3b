package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	signer "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/aws_msk_iam_v2"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/alertmanager"
	"github.com/encwatch/encwatch/alert/kafkasink"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/alert/webhook"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/rules"
)

// sinks builds every configured sink. Secrets are read here, from files or
// environment variables, and never logged.
func sinks(ctx context.Context, cfg config.Config, o Options) ([]outbox.Queue, error) {
	var qs []outbox.Queue
	if cfg.Sinks.Stdout != nil {
		w := o.Stdout
		if w == nil {
			w = os.Stdout
		}
		qs = append(qs, outbox.Queue{Sink: formatted(alert.NewStdout(w), cfg.Sinks.Stdout.Format, o.Version)})
	}
	if k := cfg.Sinks.Kafka; k != nil {
		tlsCfg, err := tlsConfig(k.TLS)
		if err != nil {
			return nil, fmt.Errorf("sinks.kafka.tls: %w", err)
		}
		mech, err := saslMechanism(ctx, k.SASL)
		if err != nil {
			return nil, fmt.Errorf("sinks.kafka.sasl: %w", err)
		}
		s, err := kafkasink.New(ctx, kafkasink.Options{Brokers: k.Brokers, Topic: k.Topic, TLS: tlsCfg, SASL: mech})
		if err != nil {
			return nil, fmt.Errorf("sinks.kafka: %w", err)
		}
		qs = append(qs, outbox.Queue{Sink: formatted(s, k.Format, o.Version)})
	}
	for i, w := range cfg.Sinks.Webhooks {
		q, err := webhookQueue(w, o.Version)
		if err != nil {
			return nil, fmt.Errorf("sinks.webhooks[%d] (%s): %w", i, w.Name, err)
		}
		qs = append(qs, q)
	}
	for i, a := range cfg.Sinks.Alertmanager {
		q, err := alertmanagerQueue(a, cfg.HTTP.ExternalURL)
		if err != nil {
			return nil, fmt.Errorf("sinks.alertmanager[%d] (%s): %w", i, a.Name, err)
		}
		qs = append(qs, q)
	}
	return append(qs, o.Sinks...), nil
}

// formatted has a sink send OCSF Detection Findings when format says so.
func formatted(s alert.Sink, format, version string) alert.Sink {
	if format == alert.FormatOCSF {
		return alert.Formatted{Sink: s, Format: format, Version: version}
	}
	return s
}

func webhookQueue(w config.Webhook, version string) (outbox.Queue, error) {
	url := w.URL
	if w.URLFile != "" {
		b, err := os.ReadFile(w.URLFile)
		if err != nil {
			return outbox.Queue{}, fmt.Errorf("urlFile: %w", err)
		}
		url = strings.TrimSpace(string(b))
	}
	secret, err := readSecret(w.SecretFile, w.SecretEnv)
	if err != nil {
		return outbox.Queue{}, err
	}
	if secret == "" && w.Format != "slack" {
		return outbox.Queue{}, errors.New("no HMAC secret: set secretFile or secretEnv (only format: slack may go unsigned)")
	}
	wf := w.Format
	if wf == "v1" || wf == alert.FormatOCSF {
		wf = "json" // the body as the formatted stage hands it over
	}
	s, err := webhook.New(webhook.Options{Name: w.Name, URL: url, Secret: []byte(secret), Timeout: w.Timeout.D(), Format: wf})
	if err != nil {
		return outbox.Queue{}, err
	}
	minSev, err := rules.ParseSeverity(w.MinSeverity)
	if err != nil {
		return outbox.Queue{}, err
	}
	only := w.Rules
	return outbox.Queue{Sink: formatted(s, w.Format, version), Concurrency: w.Concurrency, Accept: func(a alert.Alert) bool {
		sev, _ := rules.ParseSeverity(a.Severity)
		return sev >= minSev && (len(only) == 0 || slices.Contains(only, a.Rule))
	}}, nil
}

// readSecret reads a secret from a file or an environment variable.
func readSecret(file, env string) (string, error) {
	switch {
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("secret file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case env != "":
		v, ok := os.LookupEnv(env)
		if !ok || v == "" {
			return "", fmt.Errorf("environment variable %s is not set", env)
		}
		return v, nil
	}
	return "", nil
}

// tlsConfig builds a TLS client configuration (nil when TLS is off).
func tlsConfig(t config.TLS) (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	c := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: t.InsecureSkipVerify}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("caFile %s holds no PEM certificate", t.CAFile)
		}
		c.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}

// saslMechanism builds the Kafka SASL mechanism (nil when none).
func saslMechanism(ctx context.Context, s config.SASL) (sasl.Mechanism, error) {
	switch s.Mechanism {
	case "":
		return nil, nil
	case "AWS_MSK_IAM":
		cfg, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil {
			return nil, err
		}
		return &aws_msk_iam_v2.Mechanism{Signer: signer.NewSigner(), Credentials: cfg.Credentials, Region: cfg.Region}, nil
	}
	pass, err := readSecret(s.PasswordFile, s.PasswordEnv)
	if err != nil {
		return nil, err
	}
	switch s.Mechanism {
	case "PLAIN":
		return plain.Mechanism{Username: s.Username, Password: pass}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, s.Username, pass)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, s.Username, pass)
	}
	return nil, fmt.Errorf("unknown mechanism %q", s.Mechanism)
}

// SinkNames returns the outbox queue names the configuration's sinks own,
// without building the sinks (no connection, no secret read).
func SinkNames(cfg config.Config) []string {
	var names []string
	if cfg.Sinks.Stdout != nil {
		names = append(names, "stdout")
	}
	if cfg.Sinks.Kafka != nil {
		names = append(names, "kafka")
	}
	for _, w := range cfg.Sinks.Webhooks {
		names = append(names, "webhook:"+w.Name)
	}
	return names
}

func alertmanagerQueue(a config.Alertmanager, externalURL string) (outbox.Queue, error) {
	tlsCfg, err := tlsConfig(a.TLS)
	if err != nil {
		return outbox.Queue{}, fmt.Errorf("tls: %w", err)
	}
	pass, err := readSecret(a.BasicAuth.PasswordFile, a.BasicAuth.PasswordEnv)
	if err != nil {
		return outbox.Queue{}, fmt.Errorf("basicAuth: %w", err)
	}
	token, err := readSecret(a.BearerTokenFile, a.BearerTokenEnv)
	if err != nil {
		return outbox.Queue{}, fmt.Errorf("bearer token: %w", err)
	}
	s, err := alertmanager.New(alertmanager.Options{Name: a.Name, URL: a.URL, ResolveAfter: a.ResolveAfter.D(), ExternalURL: externalURL,
		Username: a.BasicAuth.Username, Password: pass, BearerToken: token, TLS: tlsCfg, Timeout: a.Timeout.D()})
	if err != nil {
		return outbox.Queue{}, err
	}
	minSev, err := rules.ParseSeverity(a.MinSeverity)
	if err != nil {
		return outbox.Queue{}, err
	}
	only := a.Rules
	return outbox.Queue{Sink: s, Accept: func(al alert.Alert) bool {
		sev, _ := rules.ParseSeverity(al.Severity)
		return sev >= minSev && (len(only) == 0 || slices.Contains(only, al.Rule))
	}}, nil
}
