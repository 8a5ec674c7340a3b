package daemon

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/outbox"
	"github.com/encwatch/encwatch/alert/remediate"
	"github.com/encwatch/encwatch/cmd/config"
	"github.com/encwatch/encwatch/rules"
)

// remediateQueue builds the remediate sink: it reads the bucket state from
// db and hands its own alerts to emit (the outbox, for the other sinks).
func (a *app) remediateQueue(ctx context.Context, r *config.Remediate, db *bolt.DB) (outbox.Queue, error) {
	cfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return outbox.Queue{}, fmt.Errorf("sinks.remediate: AWS configuration: %w", err)
	}
	pathStyle := os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != ""
	var mu sync.Mutex
	clients := map[string]*s3.Client{}
	client := func(_ context.Context, account, region string) (remediate.S3API, error) {
		mu.Lock()
		defer mu.Unlock()
		k := account + "/" + region
		if c, ok := clients[k]; ok {
			return c, nil
		}
		c := cfg.Copy()
		if r.RoleName != "" {
			role := "arn:" + partition(region) + ":iam::" + account + ":role/" + r.RoleName
			c.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), role,
				func(o *stscreds.AssumeRoleOptions) { o.RoleSessionName = "encwatch-remediate" }))
		}
		cl := s3.NewFromConfig(c, func(o *s3.Options) {
			o.Region, o.UsePathStyle, o.Retryer = region, pathStyle, aws.NopRetryer{} // the outbox retries
			o.DisableLogOutputChecksumValidationSkipped = true
		})
		clients[k] = cl
		return cl, nil
	}
	m := remediate.NewMetrics(a.reg)
	m.Init(r.Rules)
	sink := remediate.New(remediate.Options{DryRun: r.IsDryRun(), Rules: r.Rules, Buckets: r.Buckets, Rate: r.Rate, RoleName: r.RoleName,
		OwnARNs: r.OwnRoleARNs, Client: client, Metrics: m, Logger: a.log.With().Str("component", "remediate").Logger(),
		State: func(key string) (st rules.BucketState, ok bool, err error) {
			err = db.View(func(tx *bolt.Tx) error {
				st, ok, err = rules.TxState{Tx: tx}.Bucket(key)
				return err
			})
			return st, ok, err
		},
		Emit: func(_ context.Context, al alert.Alert) error {
			return db.Update(func(tx *bolt.Tx) error {
				_, err := a.outbox.Put(tx, al)
				return err
			})
		}})
	return outbox.Queue{Sink: sink, Accept: sink.Accept}, nil
}

func partition(region string) string {
	switch {
	case len(region) > 3 && region[:3] == "cn-":
		return "aws-cn"
	case len(region) > 7 && region[:7] == "us-gov-":
		return "aws-us-gov"
	}
	return "aws"
}
