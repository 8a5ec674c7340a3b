package rules

// Rule IDs of the built-in catalogue.
const (
	EncryptionDeleted             = "encryption-deleted"
	AlgorithmNotAllowed           = "algorithm-not-allowed"
	DirectoryAlgorithmUnsupported = "directory-algorithm-unsupported"
	DirectoryKMSKeyAlias          = "directory-kms-key-alias"
	KMSAWSManagedKey              = "kms-aws-managed-key"
	KMSKeyNotAllowed              = "kms-key-not-allowed"
	KMSKeyRegionMismatch          = "kms-key-region-mismatch"
	DirectoryKMSKeyChanged        = "directory-kms-key-changed"
	BucketKeyDisabled             = "bucket-key-disabled"
	EncryptionChangeFailed        = "encryption-change-failed"
	PrincipalNotAllowed           = "principal-not-allowed"
	RootPrincipal                 = "root-principal"
	EncryptionReadBurst           = "encryption-read-burst"
	EncryptionConfigUnreadable    = "encryption-config-unreadable"
	SSECUnblocked                 = "sse-c-unblocked"
	KMSKeyForeignAccount          = "kms-key-foreign-account"
	KMSKeyUnusable                = "kms-key-unusable"
	EncryptionDrift               = "encryption-drift"
	ObjectEncryptionOverride      = "object-encryption-override"
	DirectoryKMSCopyCost          = "directory-kms-copy-cost"
	ObjectEncryptionRekeyed       = "object-encryption-rekeyed"
)

// Definition describes one rule of the catalogue.
type Definition struct {
	ID           string
	Severity     Severity // default; some rules vary it by bucket type, see SeverityNote
	SeverityNote string
	Description  string
	Remediation  string
	Stateful     bool
	// Inventory marks a rule only a scan of the current configuration
	// raises (no CloudTrail record can).
	Inventory bool
}

// Catalogue lists the built-in rules in the order their findings are
// reported.
var Catalogue = []Definition{
	{ID: EncryptionDeleted, Severity: High, SeverityNote: "low if AES256 is allowed for the bucket",
		Description: "a DeleteBucketEncryption succeeded: the bucket is back on SSE-S3",
		Remediation: "Restore the bucket's default encryption with PutBucketEncryption using an allowed algorithm and key, and find out why it was deleted."},
	{ID: AlgorithmNotAllowed, Severity: High,
		Description: "a PutBucketEncryption succeeded with an algorithm outside the policy's allowed set",
		Remediation: "Set the bucket's default encryption to an allowed algorithm with PutBucketEncryption, or add an override for the bucket in policy.buckets if this is intended."},
	{ID: DirectoryAlgorithmUnsupported, Severity: Medium,
		Description: "a PutBucketEncryption on a directory bucket names an algorithm other than AES256 or aws:kms (DSSE-KMS and SSE-C are not supported)",
		Remediation: "Directory buckets support only SSE-S3 (AES256) and SSE-KMS (aws:kms) as default encryption; fix the caller's configuration."},
	{ID: DirectoryKMSKeyAlias, Severity: Medium,
		Description: "a PutBucketEncryption on a directory bucket gives the KMS key as an alias (directory buckets need a key ID or key ARN)",
		Remediation: "Give the customer managed key by key ID or key ARN; directory buckets do not accept aliases."},
	{ID: KMSAWSManagedKey, Severity: High, SeverityNote: "high for directory buckets, medium for general purpose",
		Description: "a PutBucketEncryption succeeded with SSE-KMS and no key, or with the AWS managed key alias/aws/s3",
		Remediation: "Use a customer managed KMS key you control (key policy, rotation, audit); directory buckets do not support the AWS managed key."},
	{ID: KMSKeyNotAllowed, Severity: High,
		Description: "a PutBucketEncryption succeeded with a KMS key that matches no policy.allowedKMSKeys entry",
		Remediation: "Set the bucket's default encryption to an approved key, or add the key to policy.allowedKMSKeys."},
	{ID: KMSKeyRegionMismatch, Severity: Medium,
		Description: "a PutBucketEncryption names a KMS key ARN whose Region differs from the event's Region",
		Remediation: "Use a KMS key in the bucket's Region; S3 requires the key and the bucket to be in the same Region."},
	{ID: DirectoryKMSKeyChanged, Severity: High, Stateful: true,
		Description: "a PutBucketEncryption on a directory bucket names a customer managed key other than the one set on it earlier (one key per bucket lifetime)",
		Remediation: "A directory bucket keeps one customer managed key for its lifetime; keep the original key, or create a new bucket for the new key."},
	{ID: BucketKeyDisabled, Severity: Low, SeverityNote: "low for general purpose, medium for directory buckets",
		Description: "a PutBucketEncryption succeeded with SSE-KMS and BucketKeyEnabled false or absent",
		Remediation: "Set BucketKeyEnabled to true to cut KMS request costs (directory buckets always use S3 Bucket Keys)."},
	{ID: EncryptionChangeFailed, Severity: Medium,
		Description: "a PutBucketEncryption or DeleteBucketEncryption failed: a denied or broken change attempt",
		Remediation: "Check who tried to change the bucket's encryption and why the call failed (errorCode in the event)."},
	{ID: PrincipalNotAllowed, Severity: High,
		Description: "a PutBucketEncryption or DeleteBucketEncryption succeeded by a caller outside policy.allowedPrincipals",
		Remediation: "Review the change and the caller's permissions; restrict s3:PutEncryptionConfiguration to the allowed principals."},
	{ID: RootPrincipal, Severity: High,
		Description: "a PutBucketEncryption or DeleteBucketEncryption succeeded by the account root user",
		Remediation: "Review the change; the root user should not be used for routine changes."},
	{ID: EncryptionReadBurst, Severity: Low, Stateful: true,
		Description: "one caller ran GetBucketEncryption on at least readBurst.buckets distinct buckets within readBurst.window (one alert per burst)",
		Remediation: "Check whether the caller is an inventory tool or reconnaissance."},
	{ID: EncryptionConfigUnreadable, Severity: Medium,
		Description: "a PutBucketEncryption succeeded but no algorithm can be read from its request",
		Remediation: "Read the bucket's encryption with GetBucketEncryption to learn what was set."},
	{ID: SSECUnblocked, Severity: High,
		Description: "a PutBucketEncryption succeeded on a general purpose bucket and names BlockedEncryptionTypes without SSE-C (for example NONE), while policy requireSSECBlocked holds for it: the first step of the SSE-C ransomware pattern",
		Remediation: "Block SSE-C again (BlockedEncryptionTypes with EncryptionType SSE-C) unless an application needs customer-provided keys, and check who unblocked it; watch the bucket for CopyObject or PutObject with SSE-C headers."},
	{ID: KMSKeyForeignAccount, Severity: Critical,
		Description: "a PutBucketEncryption succeeded and the KMS key it sets belongs to another account than the bucket's (a key or alias ARN of another account, or on a general purpose bucket an alias name or key ID named by a caller of another account), and matches no allowedKMSKeys entry: the SSE-KMS ransomware pattern",
		Remediation: "Set the bucket's default encryption back to a key of its own account now: whoever controls the other account can disable or delete the key and make new objects unwritable and, once deleted, unreadable."},
	{ID: KMSKeyUnusable, Severity: Critical, Stateful: true,
		Description: "a ScheduleKeyDeletion, DisableKey or DeleteKey succeeded on a KMS key that is the default key of a bucket encwatch knows (from a Put or the inventory), or the inventory reads a bucket's key as disabled or pending deletion; one finding per bucket, naming the key and, for a deletion, its date",
		Remediation: "If this was not meant: CancelKeyDeletion or EnableKey now (a deleted key cannot be brought back), then move the bucket to a key of its own account. If it was: give the bucket another default key first; objects under the old key cannot be read once it is deleted."},
	{ID: EncryptionDrift, Severity: Medium, Stateful: true, Inventory: true,
		Description: "the inventory reads a bucket configuration that differs from the one encwatch last knew (from events or an earlier scan) with no encryption event in between: AWS's own SSE-C switch, a missed event, a change the trail did not log",
		Remediation: "Find out who or what changed the configuration: check that the trail (or LookupEvents source) covers the bucket's account and Region, and AWS announcements for changes made without an event."},
	{ID: ObjectEncryptionOverride, Severity: Low, Stateful: true,
		SeverityNote: "medium when the algorithm is outside the allowed set, high for SSE-C",
		Description:  "a data event (PutObject, CopyObject, CreateMultipartUpload, CreateSession) named its own server-side encryption instead of the bucket default; one alert per bucket, caller and setting per dataEvents.window, with the count",
		Remediation:  "Set the encryption you want as the bucket default and stop sending x-amz-server-side-encryption headers; AWS recommends not overriding it in CreateSession or PUT requests on directory buckets."},
	{ID: DirectoryKMSCopyCost, Severity: Info, Stateful: true,
		Description: "copies (CopyObject, UploadPartCopy) of SSE-KMS objects to, from or between directory buckets, where S3 Bucket Keys do not apply and each copy is a KMS request; one alert per bucket per dataEvents.window, with the count",
		Remediation: "Expect a KMS request per copied object; batch or avoid SSE-KMS copies involving directory buckets where the cost matters."},
	{ID: ObjectEncryptionRekeyed, Severity: Low, Stateful: true,
		SeverityNote: "high when the key belongs to another account than the bucket's or matches no allowedKMSKeys entry",
		Description:  "a successful UpdateObjectEncryption (a data event) changed objects' SSE-KMS key in place, with no PutObject or CopyObject; one alert per bucket, caller and key per dataEvents.window, with the count",
		Remediation:  "Check who re-keyed the objects and to which key; a key of another account or one outside policy is how objects are taken hostage without rewriting them."},
}

// DataRules are the rules that judge data events; the decoder reads data
// events only when one of them is on.
var DataRules = []string{ObjectEncryptionOverride, DirectoryKMSCopyCost, ObjectEncryptionRekeyed}

// Lookup returns the catalogue entry of a rule ID, or nil.
func Lookup(id string) *Definition {
	for i := range Catalogue {
		if Catalogue[i].ID == id {
			return &Catalogue[i]
		}
	}
	return nil
}
