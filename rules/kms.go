package rules

import "strings"

// Algorithms S3 knows for default encryption.
const (
	AlgAES256  = "AES256"
	AlgKMS     = "aws:kms"
	AlgKMSDSSE = "aws:kms:dsse"
)

// KnownAlgorithms are the SSEAlgorithm values a policy may name.
var KnownAlgorithms = []string{AlgAES256, AlgKMS, AlgKMSDSSE}

// IsAlias reports whether a KMS key is given as an alias name (alias/...)
// or an alias ARN (...:alias/...).
func IsAlias(key string) bool {
	return strings.HasPrefix(key, "alias/") || strings.Contains(key, ":alias/")
}

// IsManagedAlias reports whether key names the AWS managed key for S3.
func IsManagedAlias(key string) bool {
	return key == "alias/aws/s3" || strings.HasSuffix(key, ":alias/aws/s3")
}

// kmsARN splits arn:PARTITION:kms:REGION:ACCOUNT:RESOURCE without
// allocating; it runs for every key of every Put.
func kmsARN(key string) (region, account, resource string, ok bool) {
	rest, found := strings.CutPrefix(key, "arn:")
	if !found {
		return "", "", "", false
	}
	var service string
	if _, rest, found = strings.Cut(rest, ":"); !found { // partition
		return "", "", "", false
	}
	if service, rest, found = strings.Cut(rest, ":"); !found || service != "kms" {
		return "", "", "", false
	}
	if region, rest, found = strings.Cut(rest, ":"); !found {
		return "", "", "", false
	}
	if account, resource, found = strings.Cut(rest, ":"); !found {
		return "", "", "", false
	}
	return region, account, resource, true
}

// KeyRegion returns the Region of a KMS key or alias ARN, or "".
func KeyRegion(key string) string {
	r, _, _, _ := kmsARN(key)
	return r
}

// KeyAccount returns the account of a KMS key or alias ARN, or "".
func KeyAccount(key string) string {
	_, a, _, _ := kmsARN(key)
	return a
}

// KeyID returns the key ID of a key ARN (arn:...:key/ID), or key itself
// when it is not a key ARN.
func KeyID(key string) string {
	if _, _, res, ok := kmsARN(key); ok && strings.HasPrefix(res, "key/") {
		return strings.TrimPrefix(res, "key/")
	}
	return key
}

// keyAllowed reports whether an allowedKMSKeys entry allows key: the entry
// globs the key as given; a key ID is also allowed by an entry ARN ending
// in :key/<id>; a key ARN by an entry equal to its key ID.
func keyAllowed(entry, key string) bool {
	if Glob(entry, key) {
		return true
	}
	if !strings.HasPrefix(key, "arn:") && !IsAlias(key) && strings.HasSuffix(entry, ":key/"+key) {
		return true
	}
	if id := KeyID(key); id != key && entry == id {
		return true
	}
	return false
}
