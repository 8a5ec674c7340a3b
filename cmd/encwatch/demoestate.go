package main

import "github.com/encwatch/encwatch/fixtures/awsemu"

// estateAccount is the member account whose buckets the demo's inventory
// scans through an assumed role.
const estateAccount = "444455556666"

var demoOn = true

// demoEstate is a small estate with a bit of everything the inventory
// judges: compliant buckets, SSE-S3 with SSE-C allowed, the AWS managed
// key, a key of another account, a directory bucket whose key is pending
// deletion, and a bucket whose policy denies the reader.
var demoEstate = []awsemu.Bucket{
	{Name: "estate-payments", Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "alias/estate-data", BucketKey: &demoOn, Blocked: []string{"SSE-C"}}}},
	{Name: "estate-analytics", Region: "us-west-2", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "arn:aws:kms:us-west-2:" + estateAccount + ":key/estate-west", BucketKey: &demoOn, Blocked: []string{"SSE-C"}}}},
	{Name: "estate-legacy-uploads", Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "AES256", Blocked: []string{"NONE"}}}},
	{Name: "estate-reports", Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "aws:kms", BucketKey: &demoOn, Blocked: []string{"SSE-C"}}}},
	{Name: "estate-partner-drop", Region: "us-east-1", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "arn:aws:kms:us-east-1:999988887777:key/partner", BucketKey: &demoOn, Blocked: []string{"SSE-C"}}}},
	{Name: "estate-fast--usw2-az1--x-s3", Region: "us-west-2", Rules: []awsemu.Rule{{Algorithm: "aws:kms", KMSKeyID: "arn:aws:kms:us-west-2:" + estateAccount + ":key/estate-retired", BucketKey: &demoOn}}},
	{Name: "estate-scratch--usw2-az1--x-s3", Region: "us-west-2", Rules: []awsemu.Rule{{Algorithm: "AES256"}}},
	{Name: "estate-locked-audit", Region: "us-west-2", Deny: true},
}

// plantEstate puts the estate and its keys in the emulators.
func plantEstate(w *awsemu.World) {
	w.KMS.AddKey(awsemu.Key{ID: "estate-east", Account: estateAccount, Region: "us-east-1", Aliases: []string{"alias/estate-data"}})
	w.KMS.AddKey(awsemu.Key{ID: "estate-west", Account: estateAccount, Region: "us-west-2"})
	w.KMS.AddKey(awsemu.Key{ID: "estate-retired", Account: estateAccount, Region: "us-west-2", State: "PendingDeletion"})
	w.KMS.AddKey(awsemu.Key{ID: "partner", Account: "999988887777", Region: "us-east-1", Shared: true})
	for _, b := range demoEstate {
		b.Account = estateAccount
		w.S3.AddBucket(b)
	}
}
