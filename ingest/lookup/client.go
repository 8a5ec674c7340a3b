package lookup

import (
	"context"
	"fmt"
	"regexp"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/cloudtrail"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

var roleAccount = regexp.MustCompile(`^arn:aws[a-z-]*:iam::(\d{12}):role/`)

// NewTarget builds the CloudTrail client for one Region with the SDK's
// default credential chain (the ECS task role), or, when roleARN is set,
// with that role assumed through STS. Endpoints follow the SDK's standard
// variables (AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_CLOUDTRAIL,
// AWS_ENDPOINT_URL_STS). The SDK's own retries are off: the tailer retries
// itself, so that every attempt passes its rate limiter.
func NewTarget(ctx context.Context, region, roleARN, externalID string) (Target, error) {
	cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(region))
	if err != nil {
		return Target{}, fmt.Errorf("AWS configuration for %s: %w", region, err)
	}
	account := "default"
	var creds *aws.CredentialsCache
	if roleARN != "" {
		m := roleAccount.FindStringSubmatch(roleARN)
		if m == nil {
			return Target{}, fmt.Errorf("role ARN %q names no account", roleARN)
		}
		account = m[1]
		provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), roleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = "encwatch"
			if externalID != "" {
				o.ExternalID = aws.String(externalID)
			}
		})
		creds = aws.NewCredentialsCache(provider)
		cfg.Credentials = creds
	}
	client := cloudtrail.NewFromConfig(cfg, func(o *cloudtrail.Options) { o.Retryer = aws.NopRetryer{} })
	return Target{Account: account, Region: region, Client: client, Credentials: creds}, nil
}
