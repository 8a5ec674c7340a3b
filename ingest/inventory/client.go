package inventory

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// S3API is the part of the S3 client a scan uses.
type S3API interface {
	ListBuckets(context.Context, *s3.ListBucketsInput, ...func(*s3.Options)) (*s3.ListBucketsOutput, error)
	ListDirectoryBuckets(context.Context, *s3.ListDirectoryBucketsInput, ...func(*s3.Options)) (*s3.ListDirectoryBucketsOutput, error)
	GetBucketEncryption(context.Context, *s3.GetBucketEncryptionInput, ...func(*s3.Options)) (*s3.GetBucketEncryptionOutput, error)
}

// KMSAPI is the part of the KMS client a scan uses.
type KMSAPI interface {
	DescribeKey(context.Context, *kms.DescribeKeyInput, ...func(*kms.Options)) (*kms.DescribeKeyOutput, error)
}

// Account is one account to scan: its ID, and its S3 and KMS clients per
// Region.
type Account struct {
	// ID is the 12-digit account ID: the buckets' account in alerts.
	ID string
	// S3 and KMS return the clients of a Region.
	S3  func(region string) S3API
	KMS func(region string) KMSAPI
	// Credentials, for an assumed role, is the cache the clients sign
	// with: dropped when a call says the session expired or was revoked.
	Credentials *aws.CredentialsCache
}

var roleAccount = regexp.MustCompile(`^arn:aws[a-z-]*:iam::(\d{12}):role/`)

// NewAccount builds the clients of one account with the SDK's default
// credential chain (the ECS task role), or, when roleARN is set, with that
// role assumed through STS. The account ID comes from the role ARN, or from
// sts:GetCallerIdentity for the task's own credentials.
//
// The S3 client has S3 Express session auth off: the inventory calls
// directory buckets take (ListDirectoryBuckets, GetBucketEncryption) are
// Regional endpoint calls signed with plain SigV4 for s3express, which is
// also what reaches an emulator through AWS_ENDPOINT_URL_S3 (with session
// auth on, the SDK would send CreateSession first there). The SDK's own
// retries are off: the scan retries itself, so that every attempt passes
// the account's rate limiter.
func NewAccount(ctx context.Context, roleARN, externalID string) (*Account, error) {
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("AWS configuration: %w", err)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	a := &Account{}
	if roleARN != "" {
		m := roleAccount.FindStringSubmatch(roleARN)
		if m == nil {
			return nil, fmt.Errorf("role ARN %q names no account", roleARN)
		}
		a.ID = m[1]
		provider := stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), roleARN, func(o *stscreds.AssumeRoleOptions) {
			o.RoleSessionName = "encwatch-inventory"
			if externalID != "" {
				o.ExternalID = aws.String(externalID)
			}
		})
		a.Credentials = aws.NewCredentialsCache(provider)
		cfg.Credentials = a.Credentials
	} else {
		out, err := sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		if err != nil {
			return nil, fmt.Errorf("sts:GetCallerIdentity for the own account: %w", err)
		}
		a.ID = aws.ToString(out.Account)
	}
	pathStyle := os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != ""
	var mu sync.Mutex
	s3s, kmss := map[string]S3API{}, map[string]KMSAPI{}
	a.S3 = func(region string) S3API {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := s3s[region]; ok {
			return c
		}
		c := s3.NewFromConfig(cfg, func(o *s3.Options) {
			o.Region = region
			o.UsePathStyle = pathStyle
			o.DisableS3ExpressSessionAuth = aws.Bool(true)
			o.Retryer = aws.NopRetryer{}
			o.DisableLogOutputChecksumValidationSkipped = true
		})
		s3s[region] = c
		return c
	}
	a.KMS = func(region string) KMSAPI {
		mu.Lock()
		defer mu.Unlock()
		if c, ok := kmss[region]; ok {
			return c
		}
		c := kms.NewFromConfig(cfg, func(o *kms.Options) { o.Region = region; o.Retryer = aws.NopRetryer{} })
		kmss[region] = c
		return c
	}
	return a, nil
}
