package kafkasink_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/encwatch/encwatch/fixtures/testkit"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go/sasl/scram"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	kscram "github.com/twmb/franz-go/pkg/sasl/scram"
	bolt "go.etcd.io/bbolt"

	"github.com/encwatch/encwatch/alert"
	"github.com/encwatch/encwatch/alert/kafkasink"
	"github.com/encwatch/encwatch/alert/outbox"
)

const topic = "encwatch-alerts"

func cluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1), kfake.SeedTopics(3, topic)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func delivery(id, bucket, rule string) alert.Delivery {
	a := alert.Alert{Schema: alert.Schema, ID: id, Rule: rule, Severity: "high", Bucket: alert.Bucket{Name: bucket, ARN: "arn:aws:s3:::" + bucket}}
	return alert.Delivery{Alert: a, Body: []byte(`{"schema":"encwatch.alert/v1","id":"` + id + `"}`)}
}

// consume reads n records with franz-go, an independent Kafka client.
func consume(t *testing.T, addrs []string, n int, opts ...kgo.Opt) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addrs...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []*kgo.Record
	for len(out) < n && ctx.Err() == nil {
		fs := cl.PollFetches(ctx)
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r) })
	}
	return out
}

func headers(r *kgo.Record) map[string]string {
	m := map[string]string{}
	for _, h := range r.Headers {
		m[h.Key] = string(h.Value)
	}
	return m
}

func TestKeysHeadersValues(t *testing.T) {
	c := cluster(t)
	s, err := kafkasink.New(context.Background(), kafkasink.Options{Brokers: c.ListenAddrs(), Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, d := range []alert.Delivery{delivery("1", "b-one", "encryption-deleted"), delivery("2", "b-two", "root-principal"), delivery("3", "b-one", "algorithm-not-allowed")} {
		if err := s.Send(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	recs := consume(t, c.ListenAddrs(), 3)
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3", len(recs))
	}
	part := map[string]int32{}
	for _, r := range recs {
		h := headers(r)
		id := h["alert-id"]
		if string(r.Value) != `{"schema":"encwatch.alert/v1","id":"`+id+`"}` || h["schema"] != alert.Schema || h["severity"] != "high" || h["rule"] == "" {
			t.Errorf("record %s: value %s headers %v", r.Key, r.Value, h)
		}
		if prev, ok := part[string(r.Key)]; ok && prev != r.Partition {
			t.Errorf("alerts of %s on partitions %d and %d", r.Key, prev, r.Partition)
		}
		part[string(r.Key)] = r.Partition
	}
	if _, ok := part["arn:aws:s3:::b-one"]; !ok {
		t.Errorf("keys %v, want bucket ARNs", part)
	}
}

func TestMissingTopic(t *testing.T) {
	c := cluster(t)
	_, err := kafkasink.New(context.Background(), kafkasink.Options{Brokers: c.ListenAddrs(), Topic: "no-such-topic"})
	if err == nil || !strings.Contains(err.Error(), `topic "no-such-topic" does not exist`) {
		t.Errorf("err = %v", err)
	}
}

// selfSigned makes a certificate for 127.0.0.1 and the pool that trusts it.
func selfSigned(t *testing.T) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestSCRAMOverTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	c := cluster(t, kfake.EnableSASL(), kfake.Superuser("SCRAM-SHA-512", "encwatch", "right-password"),
		kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}}))
	clientTLS := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	wrong, _ := scram.Mechanism(scram.SHA512, "encwatch", "wrong-password")
	if _, err := kafkasink.New(context.Background(), kafkasink.Options{Brokers: c.ListenAddrs(), Topic: topic, TLS: clientTLS, SASL: wrong}); err == nil {
		t.Error("a wrong password was accepted")
	}
	if _, err := kafkasink.New(context.Background(), kafkasink.Options{Brokers: c.ListenAddrs(), Topic: topic}); err == nil {
		t.Error("plaintext without SASL was accepted by a TLS+SASL broker")
	}
	mech, _ := scram.Mechanism(scram.SHA512, "encwatch", "right-password")
	s, err := kafkasink.New(context.Background(), kafkasink.Options{Brokers: c.ListenAddrs(), Topic: topic, TLS: clientTLS, SASL: mech})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Send(context.Background(), delivery("tls-1", "b", "encryption-deleted")); err != nil {
		t.Fatal(err)
	}
	recs := consume(t, c.ListenAddrs(), 1, kgo.DialTLSConfig(clientTLS),
		kgo.SASL(kscram.Auth{User: "encwatch", Pass: "right-password"}.AsSha512Mechanism()))
	if len(recs) != 1 || headers(recs[0])["alert-id"] != "tls-1" {
		t.Errorf("records %v", recs)
	}
}

// TestBrokerOutage stops the cluster while alerts wait, starts a new one on
// the same port, and requires every alert to arrive.
func TestBrokerOutage(t *testing.T) {
	c1, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	addr := c1.ListenAddrs()[0]
	_, port, _ := net.SplitHostPort(addr)
	s, err := kafkasink.New(context.Background(), kafkasink.Options{Brokers: []string{addr}, Topic: topic, WriteTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	db, _ := bolt.Open(filepath.Join(t.TempDir(), "s.db"), 0o600, nil)
	defer db.Close()
	ob, _ := outbox.New(outbox.Options{DB: db, Queues: []outbox.Queue{{Sink: s}}, MinBackoff: 50 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, Logger: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() { ob.Run(ctx, time.Second); close(runDone) }()
	defer func() { cancel(); <-runDone }()
	c1.Close() // the broker goes away
	for _, id := range []string{"o1", "o2", "o3", "o4"} {
		db.Update(func(tx *bolt.Tx) error {
			_, err := ob.Put(tx, delivery(id, "bucket-"+id, "encryption-deleted").Alert)
			return err
		})
	}
	time.Sleep(time.Second)
	if d := ob.Depth("kafka"); d != 4 {
		t.Fatalf("%d alerts waiting while the broker is down, want 4", d)
	}
	var p int
	for _, ch := range port {
		p = p*10 + int(ch-'0')
	}
	c2, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(p), kfake.SeedTopics(1, topic))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	testkit.Eventually(t, 15*time.Second, func() bool { return ob.Depth("kafka") == 0 }, "%d alerts still wait for the new cluster", ob.Depth("kafka"))
	recs := consume(t, c2.ListenAddrs(), 4)
	got := map[string]bool{}
	for _, r := range recs {
		got[headers(r)["alert-id"]] = true
	}
	if len(got) != 4 {
		t.Errorf("alerts after the outage: %v", got)
	}
}

// TestKcatReadsTheTopic checks the messages with Debian's kcat, an
// independent consumer (librdkafka).
func TestKcatReadsTheTopic(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kcat is not installed; scripts/test.sh installs it")
		}
		t.Skip("kcat not installed (apt-get install kcat); skipping the kcat check")
	}
	c := cluster(t)
	s, err := kafkasink.New(context.Background(), kafkasink.Options{Brokers: c.ListenAddrs(), Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Send(context.Background(), delivery("k1", "bucket-a", "encryption-deleted"))
	s.Send(context.Background(), delivery("k2", "bucket-b", "root-principal"))
	out, err := exec.Command(kcat, "-C", "-b", c.ListenAddrs()[0], "-t", topic, "-o", "beginning", "-e", "-q",
		"-f", "%k|%h|%s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{
		`arn:aws:s3:::bucket-a|rule=encryption-deleted,severity=high,schema=encwatch.alert/v1,alert-id=k1|{"schema":"encwatch.alert/v1","id":"k1"}`,
		`arn:aws:s3:::bucket-b|rule=root-principal,severity=high,schema=encwatch.alert/v1,alert-id=k2|{"schema":"encwatch.alert/v1","id":"k2"}`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("kcat output lacks %s:\n%s", want, text)
		}
	}
}
