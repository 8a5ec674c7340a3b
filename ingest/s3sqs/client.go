package s3sqs

import (
	"context"
	"fmt"
	"os"
	"regexp"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
)

var queueRegion = regexp.MustCompile(`^https://sqs\.([a-z0-9-]+)\.amazonaws\.com`)

// NewClients builds the SQS and S3 clients with the SDK's default
// credential chain. The Region is the queue's (from its URL) unless the
// environment sets one. Endpoints follow AWS_ENDPOINT_URL_SQS and
// AWS_ENDPOINT_URL_S3; with a custom S3 endpoint, requests are path-style,
// as emulators and S3-compatible stores need.
func NewClients(ctx context.Context, queueURL string) (*sqs.Client, *s3.Client, error) {
	var opts []func(*config.LoadOptions) error
	if m := queueRegion.FindStringSubmatch(queueURL); m != nil && os.Getenv("AWS_REGION") == "" {
		opts = append(opts, config.WithRegion(m[1]))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	pathStyle := os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != ""
	return sqs.NewFromConfig(cfg), s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.UsePathStyle = pathStyle
		// S3 answers without checksums are normal; the SDK would log each one.
		o.DisableLogOutputChecksumValidationSkipped = true
	}), nil
}
