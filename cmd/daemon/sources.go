package daemon

import (
	"context"
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/filesrc"
	"github.com/encwatch/encwatch/ingest/inventory"
	"github.com/encwatch/encwatch/ingest/kafkasrc"
	"github.com/encwatch/encwatch/ingest/lookup"
	"github.com/encwatch/encwatch/ingest/repartition"
	"github.com/encwatch/encwatch/ingest/s3sqs"
	"github.com/encwatch/encwatch/rules"
)

// sourceEnv is what every source is built with.
type sourceEnv struct {
	cfg        config.Config
	cps        ingest.Checkpoints
	log        zerolog.Logger
	reg        prometheus.Registerer
	pm         *pipelineMetrics
	dataEvents bool
}

// onError counts and logs a source's bad input.
func (e sourceEnv) onError(source string) func(ingest.Position, error) {
	return func(pos ingest.Position, err error) {
		e.pm.decodeErrors.WithLabelValues(source, ingest.ErrorReason(err)).Inc()
		e.log.Warn().Err(err).Str("source", source).Str("where", pos.String()).Msg("bad input skipped")
	}
}

func (e sourceEnv) logger(component string) zerolog.Logger {
	return e.log.With().Str("component", component).Logger()
}

// buildSources builds every configured source.
func buildSources(ctx context.Context, cfg config.Config, db *bolt.DB, log zerolog.Logger, reg prometheus.Registerer, pm *pipelineMetrics, dataEvents bool) ([]source, error) {
	env := sourceEnv{cfg: cfg, cps: ingest.BoltCheckpoints{DB: db}, log: log, reg: reg, pm: pm, dataEvents: dataEvents}
	builders := []struct {
		name  string
		on    bool
		build func(context.Context, sourceEnv) (ingest.Source, error)
	}{
		{"lookup", cfg.Sources.Lookup != nil, lookupSource},
		{"files", cfg.Sources.Files != nil, filesSource},
		{"sqs", cfg.Sources.SQS != nil, sqsSource},
		{"kafka", cfg.Sources.Kafka != nil, kafkaSource},
		{"inventory", cfg.Sources.Inventory != nil, inventorySource},
	}
	var out []source
	for _, b := range builders {
		if !b.on {
			continue
		}
		src, err := b.build(ctx, env)
		if err != nil {
			return nil, err
		}
		pm.init(b.name)
		out = append(out, source{name: b.name, Source: src})
	}
	return out, nil
}

func lookupSource(ctx context.Context, e sourceEnv) (ingest.Source, error) {
	l := e.cfg.Sources.Lookup
	var targets []lookup.Target
	for _, region := range l.Regions {
		if len(l.Accounts) == 0 {
			t, err := lookup.NewTarget(ctx, region, "", "")
			if err != nil {
				return nil, err
			}
			targets = append(targets, t)
		}
		for _, a := range l.Accounts {
			t, err := lookup.NewTarget(ctx, region, a.RoleARN, a.ExternalID)
			if err != nil {
				return nil, err
			}
			targets = append(targets, t)
		}
	}
	// Gets are paged only for encryption-read-burst (a policy reload that
	// turns it on or off takes effect at the next start).
	reads := !slices.Contains(e.cfg.Policy.Disabled, rules.EncryptionReadBurst)
	return lookup.New(lookup.Options{Targets: targets, Interval: l.Interval.D(), Overlap: l.Overlap.D(), StartFrom: l.StartFrom.D(), Reads: reads,
		Checkpoints: e.cps, Limits: e.cfg.IngestLimits(), OnError: e.onError("lookup"), Logger: e.logger("lookup"), Metrics: lookup.NewMetrics(e.reg)})
}

func filesSource(_ context.Context, e sourceEnv) (ingest.Source, error) {
	f := e.cfg.Sources.Files
	return &filesrc.Source{Paths: f.Paths, Watch: f.Watch, PollInterval: f.Interval.D(), Limits: e.cfg.IngestLimits(), DataEvents: e.dataEvents,
		Checkpoints: e.cps, Logger: e.logger("files"),
		// The files source logs bad input itself, with the file.
		OnError: func(_ ingest.Position, err error) {
			e.pm.decodeErrors.WithLabelValues("files", ingest.ErrorReason(err)).Inc()
		}}, nil
}

func sqsSource(ctx context.Context, e sourceEnv) (ingest.Source, error) {
	q := e.cfg.Sources.SQS
	sq, s3c, err := s3sqs.NewClients(ctx, q.QueueURL)
	if err != nil {
		return nil, err
	}
	return s3sqs.New(s3sqs.Options{QueueURL: q.QueueURL, SQS: sq, S3: s3c, Workers: q.Workers, MaxReceives: q.MaxReceives,
		Visibility: q.Visibility.D(), WaitTime: q.WaitTime.D(), Limits: e.cfg.IngestLimits(), DataEvents: e.dataEvents,
		Logger: e.logger("sqs"), Metrics: s3sqs.NewMetrics(e.reg), OnError: e.onError("sqs")})
}

func kafkaSource(ctx context.Context, e sourceEnv) (ingest.Source, error) {
	k := e.cfg.Sources.Kafka
	tlsCfg, err := tlsConfig(k.TLS)
	if err != nil {
		return nil, fmt.Errorf("sources.kafka.tls: %w", err)
	}
	mech, err := saslMechanism(ctx, k.SASL)
	if err != nil {
		return nil, fmt.Errorf("sources.kafka.sasl: %w", err)
	}
	return kafkasrc.New(kafkasrc.Options{Brokers: k.Brokers, Topic: k.Topic, Group: k.Group, TLS: tlsCfg, SASL: mech, SessionTimeout: k.SessionTimeout.D(),
		Limits: e.cfg.IngestLimits(), DataEvents: e.dataEvents, Logger: e.logger("kafka-source"),
		Metrics: kafkasrc.NewMetrics(e.reg), OnError: e.onError("kafka")})
}

func inventorySource(ctx context.Context, e sourceEnv) (ingest.Source, error) {
	inv := e.cfg.Sources.Inventory
	accounts, err := InventoryAccounts(ctx, inv.Accounts)
	if err != nil {
		return nil, fmt.Errorf("sources.inventory: %w", err)
	}
	sc := inventory.New(inventory.Options{Accounts: accounts, Regions: inv.Regions, Rate: inv.Rate,
		Metrics: inventory.NewMetrics(e.reg), Logger: e.logger("inventory")})
	return &inventory.Source{Scanner: sc, Interval: inv.Interval.D(), Checkpoints: e.cps, Logger: e.logger("inventory")}, nil
}

// InventoryAccounts builds the accounts to scan: each role of accounts,
// or the own credentials' account when there is none.
func InventoryAccounts(ctx context.Context, accounts []config.Account) ([]*inventory.Account, error) {
	if len(accounts) == 0 {
		a, err := inventory.NewAccount(ctx, "", "")
		if err != nil {
			return nil, err
		}
		return []*inventory.Account{a}, nil
	}
	var out []*inventory.Account
	for _, acc := range accounts {
		a, err := inventory.NewAccount(ctx, acc.RoleARN, acc.ExternalID)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}

// buildRepartition builds the publisher the sources hand their events to
// and the consumer that judges this task's partitions.
func buildRepartition(ctx context.Context, k *config.KafkaSource, e sourceEnv) (*repartition.Publisher, *repartition.Source, error) {
	tlsCfg, err := tlsConfig(k.TLS)
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline.repartition.kafka.tls: %w", err)
	}
	mech, err := saslMechanism(ctx, k.SASL)
	if err != nil {
		return nil, nil, fmt.Errorf("pipeline.repartition.kafka.sasl: %w", err)
	}
	o := repartition.Options{Brokers: k.Brokers, Topic: k.Topic, Group: k.Group, TLS: tlsCfg, SASL: mech, SessionTimeout: k.SessionTimeout.D(),
		Limits: e.cfg.IngestLimits(), Checkpoints: e.cps, Logger: e.logger("repartition"),
		Metrics: repartition.NewMetrics(e.reg), OnError: e.onError(repartition.SourceName)}
	pub, err := repartition.NewPublisher(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	src, err := repartition.NewSource(o)
	if err != nil {
		pub.Close()
		return nil, nil, err
	}
	return pub, src, nil
}
