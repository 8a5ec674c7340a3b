package s3sqs

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/rs/zerolog"

	"github.com/encwatch/encwatch/ingest/awserr"
)

// A log file that cannot be read leaves its message for redelivery, each
// time after a longer wait: the visibility timeout, doubled at each
// receive, up to maxObjectBackoff. So a trail bucket the task role can no
// longer read (s3:GetObject or kms:Decrypt taken away) costs one GetObject
// per message every few minutes, not one per visibility timeout. Only the
// failing message waits: a hostile message naming a key the role cannot
// read delays nothing else.
const maxObjectBackoff = 10 * time.Minute

// maxBucketFaults bounds the buckets tracked (a hostile queue can name any
// bucket); past it the oldest is forgotten.
const maxBucketFaults = 64

// bucketFault is a trail bucket none of whose files could be read since
// its first failure.
type bucketFault struct {
	reason string
	since  time.Time
	files  int           // failures since
	logged time.Duration // the longest hold already logged
}

// objectWait is how long a message whose file failed at its receives-th
// receive stays invisible.
func (s *Source) objectWait(receives int) time.Duration {
	return min(s.o.Visibility<<min(max(receives-1, 0), 20), maxObjectBackoff)
}

// objectFailed records a file that could not be read and returns how long
// its message waits. The log says so for a bucket's first failure and when
// the wait has grown fourfold, not for every file.
func (s *Source) objectFailed(o Object, err error, receives int, log zerolog.Logger) time.Duration {
	reason := awserr.Reason(err)
	s.o.Metrics.objectErrors.WithLabelValues(reason).Inc()
	wait := s.objectWait(receives)
	if receives >= s.o.MaxReceives {
		s.o.Metrics.gaveUp.Inc()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buckets == nil {
		s.buckets = map[string]*bucketFault{}
	}
	f, known := s.buckets[o.Bucket]
	if !known {
		if len(s.buckets) >= maxBucketFaults {
			oldest := ""
			for b, g := range s.buckets {
				if oldest == "" || g.since.Before(s.buckets[oldest].since) {
					oldest = b
				}
			}
			delete(s.buckets, oldest)
		}
		f = &bucketFault{reason: reason, since: time.Now().UTC()}
		s.buckets[o.Bucket] = f
		s.o.Metrics.bucketsFailing.Set(float64(len(s.buckets)))
	}
	f.files++
	f.reason = reason
	if f.logged == 0 || wait >= 4*f.logged || receives >= s.o.MaxReceives {
		f.logged = max(f.logged, wait)
		l := log.Warn()
		if receives >= s.o.MaxReceives {
			l = log.Error() // the queue's redrive policy takes it from here
		}
		l.Err(err).Str("bucket", o.Bucket).Str("key", o.Key).Str("reason", reason).Int("receives", receives).
			Int("files_failed", f.files).Dur("retry_in", wait).
			Msg("log file unreadable; its message waits and is read again (check s3:GetObject on the trail bucket and kms:Decrypt on its key); past maxReceives the queue's dead-letter policy takes it")
	}
	return wait
}

// objectWorked clears the bucket's fault once one of its files was read.
func (s *Source) objectWorked(bucket string, log zerolog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f, ok := s.buckets[bucket]; ok {
		log.Info().Str("bucket", bucket).Str("was", f.reason).Int("files_failed", f.files).Msg("log files of the bucket are read again")
		delete(s.buckets, bucket)
		s.o.Metrics.bucketsFailing.Set(float64(len(s.buckets)))
	}
}

// bucketsFailing lists the failing buckets for Failing; s.mu is held.
func (s *Source) bucketsFailing() []string {
	var out []string
	for b, f := range s.buckets {
		out = append(out, "s3://"+b+": "+f.reason+" since "+f.since.Format(time.RFC3339)+" ("+strconv.Itoa(f.files)+" files)")
	}
	slices.Sort(out)
	return out
}

// hold keeps a message invisible for d before SQS hands it out again.
func (s *Source) hold(ctx context.Context, m types.Message, d time.Duration, log zerolog.Logger) {
	secs := int32(min(d, 12*time.Hour) / time.Second)
	if secs <= int32(s.o.Visibility/time.Second) {
		return // the visibility timeout already does it
	}
	_, err := s.o.SQS.ChangeMessageVisibility(ctx, &sqs.ChangeMessageVisibilityInput{QueueUrl: aws.String(s.o.QueueURL),
		ReceiptHandle: m.ReceiptHandle, VisibilityTimeout: secs})
	if err != nil && ctx.Err() == nil {
		log.Warn().Err(err).Msg("holding an unreadable message back failed; SQS delivers it after the visibility timeout")
	}
}
