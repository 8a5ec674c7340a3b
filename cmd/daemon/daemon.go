// Package daemon is `encwatch run`: every configured source, the rules
// engine and every sink, with durable state, an HTTP server for metrics and
// health, and an orderly shutdown.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sync/errgroup"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/ingest"
	"github.com/encwatch/encwatch/ingest/filesrc"
	"github.com/encwatch/encwatch/ingest/kafkasrc"
	"github.com/encwatch/encwatch/ingest/lookup"
	"github.com/encwatch/encwatch/ingest/s3sqs"
	"github.com/encwatch/encwatch/rules"
)

// DrainTimeout bounds how long a stopping daemon keeps delivering what
// waits in the outbox; with the rest of the shutdown it stays well within
// ECS's 30 s stop timeout.
const DrainTimeout = 10 * time.Second

// Options configures a daemon.
type Options struct {
	Config config.Config
	// Stdout receives the stdout sink's alerts; Stderr the logs.
	Stdout, Stderr io.Writer
	// Registry receives the metrics (nil: a new one).
	Registry *prometheus.Registry
	// Version, Revision and GoVersion label the build-info metric.
	Version, Revision, GoVersion string
	// Sinks are added to the configured ones (the demo's receivers).
	Sinks []outbox.Queue
	// OnReady is called with the HTTP address once the daemon runs.
	OnReady func(addr string)
	// ConfigPath is the file the policy and custom rules are reloaded from.
	ConfigPath string
	// Reload asks for a reload (the command sends SIGHUP here).
	Reload <-chan struct{}
}

// component is anything the daemon runs until its context ends.
type component struct {
	name string
	run  func(context.Context, ingest.Handler) error
}

// Run runs the daemon until ctx ends, then stops reading, finishes the
// batch in flight, drains the outbox for up to DrainTimeout and closes the
// state. It returns nil after a clean stop.
func Run(ctx context.Context, o Options) error {
	cfg := o.Config
	log := newLogger(o.Stderr, cfg.Log.Level)
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "encwatch_build_info", Help: "Build of the running daemon; always 1."},
		[]string{"version", "revision", "goversion"})
	reg.MustRegister(buildInfo)
	buildInfo.WithLabelValues(o.Version, o.Revision, o.GoVersion).Set(1)

	db, err := openState(cfg.State.Dir)
	if err != nil {
		return err
	}
	defer func() {
		if err := db.Close(); err != nil {
			log.Error().Err(err).Msg("closing state")
		}
	}()
	pm := newPipelineMetrics(reg)
	pm.reloads.WithLabelValues("success")
	pm.reloads.WithLabelValues("failure")
	engine, err := newEngine(cfg, pm, log)
	if err != nil {
		return err
	}
	queues, err := sinks(ctx, cfg, o)
	if err != nil {
		return err
	}
	ob, err := outbox.New(outbox.Options{DB: db, Queues: queues, Logger: log.With().Str("component", "outbox").Logger(), Metrics: outbox.NewMetrics(reg)})
	if err != nil {
		return err
	}
	sc := newStateCollector(db)
	reg.MustRegister(sc)
	p := &pipeline{db: db, outbox: ob, now: time.Now, metrics: pm, state: sc, log: log.With().Str("component", "pipeline").Logger()}
	p.engine.Store(engine)
	if err := p.recover(ctx); err != nil {
		return err
	}
	sources, err := buildSources(ctx, cfg, db, log, reg, p.metrics, engine.DataRulesOn())
	if err != nil {
		return err
	}
	if len(sources) == 0 {
		return errors.New("no source configured: set sources.lookup, sources.files, sources.sqs or sources.kafka")
	}
	token, err := readSecret(cfg.HTTP.TokenFile, "")
	if err != nil {
		return fmt.Errorf("http.tokenFile: %w", err)
	}
	so := serverOptions{addr: cfg.HTTP.Listen, token: token, cert: cfg.HTTP.TLS.CertFile, keyFile: cfg.HTTP.TLS.KeyFile, pprof: cfg.HTTP.Pprof}
	srv, err := newServer(so, reg, func() error { return ready(db, queues) }, map[string]http.Handler{"/buckets": bucketsHandler(db)})
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	log.Info().Str("listen", srv.Addr()).Str("state", cfg.State.Dir).Int("sources", len(sources)).Int("sinks", len(queues)).
		Str("version", o.Version).Msg("encwatch running")

	// Sources stop first (ctx), then the outbox drains, then HTTP stops.
	deliverCtx, stopDelivery := context.WithCancel(context.Background())
	defer stopDelivery()
	httpCtx, stopHTTP := context.WithCancel(context.Background())
	defer stopHTTP()
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.run(httpCtx) }()
	obDone := make(chan error, 1)
	go func() { obDone <- ob.Run(deliverCtx, DrainTimeout) }()
	// Reloads and window expiry run until the sources have stopped and are
	// joined before the state closes.
	bgCtx, stopBG := context.WithCancel(ctx)
	defer stopBG()
	var bg sync.WaitGroup
	bg.Go(func() { p.reloads(bgCtx, o, cfg, log) })
	bg.Go(func() { p.expireLoop(bgCtx, time.Minute) })

	g, gctx := errgroup.WithContext(ctx)
	for _, s := range sources {
		g.Go(func() error {
			if err := s.run(gctx, p.handle); err != nil {
				return fmt.Errorf("source %s: %w", s.name, err)
			}
			log.Debug().Str("source", s.name).Msg("source stopped")
			return nil
		})
	}
	srv.ready.Store(true)
	if o.OnReady != nil {
		o.OnReady(srv.Addr())
	}
	err = g.Wait()
	if err != nil && ctx.Err() == nil {
		log.Error().Err(err).Msg("a source failed; stopping")
	}
	if err == nil && ctx.Err() == nil {
		// Every source finished by itself (files without watch): deliver
		// everything before exiting, unless told to stop.
		log.Info().Msg("sources finished; delivering what waits in the outbox")
		for ctx.Err() == nil && pending(ob, queues) > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	stopBG()
	bg.Wait()
	log.Info().Msg("stopping: sources stopped, draining the outbox")
	srv.ready.Store(false)
	stopDelivery()
	<-obDone
	for _, q := range queues {
		if c, ok := q.Sink.(io.Closer); ok {
			if err := c.Close(); err != nil {
				log.Warn().Err(err).Str("sink", q.Sink.Name()).Msg("closing sink")
			}
		}
	}
	stopHTTP()
	<-httpDone
	log.Info().Msg("stopped")
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func newLogger(w io.Writer, level string) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	l, err := zerolog.ParseLevel(level)
	if err != nil {
		l = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(l).With().Timestamp().Logger()
}

// openState opens the bbolt database in the state folder. The file lock
// keeps a second daemon off the same state.
func openState(dir string) (*bolt.DB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state.dir: %w", err)
	}
	path := filepath.Join(dir, "encwatch.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("state %s is in use by another encwatch process", path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening state %s: %w", path, err)
	}
	return db, nil
}

func buildSources(ctx context.Context, cfg config.Config, db *bolt.DB, log zerolog.Logger, reg prometheus.Registerer, pm *pipelineMetrics, dataEvents bool) ([]component, error) {
	var out []component
	cps := ingest.BoltCheckpoints{DB: db}
	onErr := func(source string) func(ingest.Position, error) {
		return func(pos ingest.Position, err error) {
			pm.decodeErrors.WithLabelValues(source, ingest.ErrorReason(err)).Inc()
			log.Warn().Err(err).Str("source", source).Str("where", pos.String()).Msg("bad input skipped")
		}
	}
	if l := cfg.Sources.Lookup; l != nil {
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
		src, err := lookup.New(lookup.Options{Targets: targets, Interval: l.Interval.D(), Overlap: l.Overlap.D(), StartFrom: l.StartFrom.D(),
			Checkpoints: cps, Limits: cfg.IngestLimits(), OnError: onErr("lookup"),
			Logger: log.With().Str("component", "lookup").Logger(), Metrics: lookup.NewMetrics(reg)})
		if err != nil {
			return nil, err
		}
		out = append(out, component{name: "lookup", run: src.Run})
		pm.init("lookup")
	}
	if f := cfg.Sources.Files; f != nil {
		fs := &filesrc.Source{Paths: f.Paths, Watch: f.Watch, PollInterval: f.Interval.D(), Limits: cfg.IngestLimits(), DataEvents: dataEvents, Checkpoints: cps,
			Logger: log.With().Str("component", "files").Logger(),
			OnError: func(_ ingest.Position, err error) {
				pm.decodeErrors.WithLabelValues("files", ingest.ErrorReason(err)).Inc()
			}}
		pm.init("files")
		out = append(out, component{name: "files", run: fs.Run})
	}
	if q := cfg.Sources.SQS; q != nil {
		sq, s3c, err := s3sqs.NewClients(ctx, q.QueueURL)
		if err != nil {
			return nil, err
		}
		src, err := s3sqs.New(s3sqs.Options{QueueURL: q.QueueURL, SQS: sq, S3: s3c, Workers: q.Workers, MaxReceives: q.MaxReceives,
			Visibility: q.Visibility.D(), WaitTime: q.WaitTime.D(), Limits: cfg.IngestLimits(), DataEvents: dataEvents,
			Logger: log.With().Str("component", "sqs").Logger(), Metrics: s3sqs.NewMetrics(reg), OnError: onErr("sqs")})
		if err != nil {
			return nil, err
		}
		out = append(out, component{name: "sqs", run: src.Run})
		pm.init("sqs")
	}
	if k := cfg.Sources.Kafka; k != nil {
		tlsCfg, err := TLSConfig(k.TLS)
		if err != nil {
			return nil, fmt.Errorf("sources.kafka.tls: %w", err)
		}
		mech, err := SASLMechanism(ctx, k.SASL)
		if err != nil {
			return nil, fmt.Errorf("sources.kafka.sasl: %w", err)
		}
		src, err := kafkasrc.New(kafkasrc.Options{Brokers: k.Brokers, Topic: k.Topic, Group: k.Group, TLS: tlsCfg, SASL: mech,
			Limits: cfg.IngestLimits(), DataEvents: dataEvents, Logger: log.With().Str("component", "kafka-source").Logger(),
			Metrics: kafkasrc.NewMetrics(reg), OnError: onErr("kafka")})
		if err != nil {
			return nil, err
		}
		out = append(out, component{name: "kafka", run: src.Run})
		pm.init("kafka")
	}
	return out, nil
}

func pending(ob *outbox.Outbox, qs []outbox.Queue) int {
	n := 0
	for _, q := range qs {
		n += ob.Depth(q.Sink.Name())
	}
	return n
}

// ready checks that the state answers and every sink that can tell is
// reachable.
func ready(db *bolt.DB, qs []outbox.Queue) error {
	if err := db.View(func(*bolt.Tx) error { return nil }); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, q := range qs {
		if c, ok := q.Sink.(alert.Checker); ok {
			if err := c.Check(ctx); err != nil {
				return fmt.Errorf("sink %s: %w", q.Sink.Name(), err)
			}
		}
	}
	return nil
}

// newEngine builds the rules engine of a configuration.
func newEngine(cfg config.Config, pm *pipelineMetrics, log zerolog.Logger) (*rules.Engine, error) {
	e, err := rules.New(cfg.Policy, nil, cfg.Compiled...)
	if err != nil {
		return nil, err
	}
	e.OnKMSCopy(func(t string) { pm.kmsCopies.WithLabelValues(t).Inc() })
	for _, c := range cfg.Compiled {
		pm.customErrors.WithLabelValues(c.ID, "error")
		pm.customErrors.WithLabelValues(c.ID, "cost")
		pm.ruleErrors.WithLabelValues(c.ID)
	}
	e.OnRuleError(func(re *rules.RuleError) {
		pm.ruleErrors.WithLabelValues(re.Rule).Inc()
		if re.Custom {
			reason := "error"
			if errors.Is(re.Err, rules.ErrCostExceeded) {
				reason = "cost"
			}
			pm.customErrors.WithLabelValues(re.Rule, reason).Inc()
		}
		l := log.Warn().Str("rule", re.Rule).Str("error", re.Err.Error())
		if ev := re.Event; ev != nil {
			l = l.Str("event_id", ev.ID).Str("event_name", ev.Name).Str("origin", ev.Origin.String())
		}
		if re.Stack != nil {
			l = l.Bytes("stack", re.Stack)
		}
		l.Msg("rule failed on an event; skipped for it, the event's other rules ran")
	})
	return e, nil
}

// reloads replaces the policy and custom rules when asked (SIGHUP) or, with
// reload.watch, when the configuration file changes. A configuration that
// does not load or compile is logged and counted; the running one stays.
func (p *pipeline) reloads(ctx context.Context, o Options, cfg config.Config, log zerolog.Logger) {
	if o.ConfigPath == "" {
		return
	}
	var tick <-chan time.Time
	var lastMod time.Time
	if cfg.Reload.Watch {
		t := time.NewTicker(cfg.Reload.Interval.D())
		defer t.Stop()
		tick = t.C
		if st, err := os.Stat(o.ConfigPath); err == nil {
			lastMod = st.ModTime()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.Reload:
		case <-tick:
			st, err := os.Stat(o.ConfigPath)
			if err != nil || st.ModTime().Equal(lastMod) {
				continue
			}
			lastMod = st.ModTime()
		}
		p.reload(o.ConfigPath, log)
	}
}

func (p *pipeline) reload(path string, log zerolog.Logger) {
	cfg, err := config.Load(path, os.Environ())
	var e *rules.Engine
	if err == nil {
		e, err = newEngine(cfg, p.metrics, log)
	}
	if err != nil {
		p.metrics.reloads.WithLabelValues("failure").Inc()
		log.Error().Str("config", path).Str("error", err.Error()).Msg("reload rejected; the running policy stays in force")
		return
	}
	p.engine.Store(e)
	p.metrics.reloads.WithLabelValues("success").Inc()
	log.Info().Str("config", path).Int("custom_rules", len(cfg.Compiled)).
		Msg("policy and custom rules reloaded (sources, sinks and state change only on restart)")
}
